"""S1 swath borders and nodata: zero fill (untagged, dB or linear) and declared nodata come out
as nodata with a NaN gate, never as restored land; S1 finer than S2 is averaged onto it."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import tiny_models
import georasters
from georasters import ORIGIN, write_tif
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.grid import S1OnS2Grid, open_raster

SEN12 = "ROIs2017_winter_112_p797.tif"


@pytest.fixture(scope="module")
def real_pair(shared_data):
    with rasterio.open(shared_data / "sen12mscr" / "s2" / SEN12) as s2, \
            rasterio.open(shared_data / "sen12mscr" / "s1" / SEN12) as s1:
        return s2.read(), s1.read(), s2.crs.to_string(), s2.transform


@pytest.mark.parametrize("units, nodata", [("db", None), ("linear", None), ("db", -9999.0),
                                           ("linear", -1.0)])
def test_outside_the_swath_is_nodata_never_land(tmp_path, real_pair, units, nodata):
    s2_dn, s1_db, crs, transform = real_pair
    s1 = s1_db if units == "db" else (10 ** (s1_db / 10)).astype(np.float32)
    s1 = s1.copy()
    fill = 0.0 if nodata is None else nodata
    s1[:, :, :80] = fill                      # the swath edge: 80 columns without backscatter
    s2_path = write_tif(tmp_path / "s2.tif", s2_dn, crs=crs, transform=transform)
    s1_path = write_tif(tmp_path / "s1.tif", s1, crs=crs, transform=transform, nodata=nodata)
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16)
    result = remove_clouds(RemovalRequest(str(s2_path), str(s1_path), str(tmp_path / "o.tif"),
                                          model=str(model)))
    assert any("nodata" in m for m in result.messages)
    assert any("linear power" in m for m in result.messages) == (units == "linear")
    with rasterio.open(tmp_path / "o.tif") as out, rasterio.open(tmp_path / "o_gate.tif") as g:
        restored, gate = out.read(), g.read(1)
        assert out.nodata == 0
    assert (restored[:, :, :80] == 0).all() and np.isnan(gate[:, :80]).all()
    np.testing.assert_array_equal(restored[:, :, 80:], s2_dn[:, :, 80:])
    assert np.isfinite(gate[:, 80:]).all()


def test_a_zero_in_one_band_is_data_not_nodata(tmp_path, real_pair):
    """0 dB is the clip ceiling of SEN12MS-CR: a bright pixel may read 0 in VV alone."""
    s2_dn, s1_db, crs, transform = real_pair
    s1 = s1_db.copy()
    s1[0, 100:110, 100:110] = 0.0
    s1_path = write_tif(tmp_path / "s1.tif", s1, crs=crs, transform=transform)
    s2_path = write_tif(tmp_path / "s2.tif", s2_dn, crs=crs, transform=transform)
    with open_raster(s1_path, "S1") as src, open_raster(s2_path, "S2") as s2, \
            S1OnS2Grid(src, s2) as grid:
        values = grid.read(Window(0, 0, 256, 256))
    assert np.isfinite(values).all()
    assert (values[0, 100:110, 100:110] == 0).all()


def _resampled(tmp_path, s1, s1_res, s2_res=10):
    s2_path = write_tif(tmp_path / "s2.tif", np.ones((13, 64, 64), np.uint16),
                        transform=from_origin(*ORIGIN, s2_res, s2_res))
    s1_path = write_tif(tmp_path / "s1.tif", s1, transform=from_origin(*ORIGIN, s1_res, s1_res))
    with open_raster(s1_path, "S1") as src, open_raster(s2_path, "S2") as s2, \
            S1OnS2Grid(src, s2) as grid:
        return grid.resampling.name, grid.read(Window(0, 0, 64, 64))


def test_s1_finer_than_s2_is_averaged_coarser_is_interpolated(tmp_path, real_pair):
    _, s1_db, _, _ = real_pair
    s1 = s1_db[:, :128, :128].copy()
    name, values = _resampled(tmp_path, s1, 5)        # 5 m S1 onto a 10 m S2 grid
    assert name == "average"
    means = s1.reshape(2, 64, 2, 64, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(values, means, atol=1e-4)
    name, values = _resampled(tmp_path, s1, 20)       # 20 m S1: bilinear
    assert name == "bilinear"
    # 10 m pixel 2k+1 has its centre a quarter of a 20 m pixel past the centre of pixel k.
    a, b = s1[:, :31, :31], s1[:, 1:32, :31]
    c, d = s1[:, :31, 1:32], s1[:, 1:32, 1:32]
    bilinear = 0.5625 * a + 0.1875 * (b + c) + 0.0625 * d
    np.testing.assert_allclose(values[:, 1:-1:2, 1:-1:2], bilinear, atol=1e-3)
    name, _ = _resampled(tmp_path, s1, 10)            # the same grid: bilinear (an identity)
    assert name == "bilinear"


def test_the_engine_says_it_averaged_a_finer_s1(tmp_path, real_pair):
    s2_dn, s1_db, crs, transform = real_pair
    s2_path = write_tif(tmp_path / "s2.tif", s2_dn[:, :128, :128], crs=crs, transform=transform)
    s1_path = write_tif(tmp_path / "s1.tif", s1_db, crs=crs,
                        transform=from_origin(transform.c, transform.f, 5, 5))
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=64, overlap=16)
    result = remove_clouds(RemovalRequest(str(s2_path), str(s1_path), str(tmp_path / "o.tif"),
                                          model=str(model)))
    assert any("finer than the S2 grid; averaged" in m for m in result.messages)


def test_single_pixels_clipped_to_0_db_in_both_bands_stay_data(tmp_path):
    """SEN12MS-CR clips S1 at 0 dB: a bright target can read 0 in VV and VH. Alone it is data,
    not the zero fill around a swath, which is a region."""
    s2_path, s1_path = georasters.pair(tmp_path, rows=64, cols=64)
    with rasterio.open(s1_path) as src:
        values, profile = src.read(), src.profile
    values[:, 10, 10] = 0.0            # a clipped bright pixel
    values[:, 40:, 40:] = 0.0          # a fill region
    profile.pop("nodata", None)
    with rasterio.open(tmp_path / "s1_zeros.tif", "w", **profile) as dst:
        dst.write(values)
    with rasterio.open(s2_path) as s2, rasterio.open(tmp_path / "s1_zeros.tif") as s1, \
            S1OnS2Grid(s1, s2) as grid:
        read = grid.read(Window(0, 0, 64, 64))
    assert np.all(read[:, 10, 10] == 0.0)
    assert np.isnan(read[:, 41:, 41:]).all()


def test_clusters_clipped_to_0_db_on_a_real_urban_scene_stay_data_in_every_window(
        tmp_path, shared_data):
    """Packed 4065 (SEN12MS-CR, urban) has 12 clusters of up to 9 pixels at 0 dB in VV and VH.
    They are bright targets, not swath fill: only the one touching the image's edge, where
    the halo cannot tell, is nodata, and the answer is the same whatever window reads it."""
    from sar_cloud_removal.training.evaluate import write_triplet_inputs
    from sar_cloud_removal.training.packed import read_packed

    triplet = read_packed(shared_data / "sen12mscr" / "packed", "4065")
    s2_path, s1_path = write_triplet_inputs(triplet, tmp_path)
    with rasterio.open(s1_path) as src:
        zeros = (src.read() == 0).all(axis=0)
    assert zeros.sum() == 48
    with open_raster(s1_path, "S1") as src, open_raster(s2_path, "S2") as s2, \
            S1OnS2Grid(src, s2) as grid:
        whole = grid.read(Window(0, 0, 256, 256))
        tiled = np.concatenate([np.concatenate([grid.read(Window(c, r, 64, 64))
                                                for c in range(0, 256, 64)], axis=2)
                                for r in range(0, 256, 64)], axis=1)
    np.testing.assert_array_equal(tiled, whole)
    missing = ~np.isfinite(whole).all(axis=0)
    assert missing.sum() == 3 and missing[254:, 230:232].sum() == 3    # the corner cluster
    assert (whole[:, zeros & ~missing] == 0).all()


def test_the_ragged_rim_of_a_fill_region_is_fill_and_a_small_cluster_beside_it_is_data(
        tmp_path):
    s2_path, s1_path = georasters.pair(tmp_path, rows=96, cols=96)
    with rasterio.open(s1_path) as src:
        values, profile = src.read(), src.profile
    rim = np.random.default_rng(0).integers(0, 4, 96)     # 0-3 px of fill beyond the edge
    fill = np.zeros((96, 96), bool)
    for row in range(96):
        fill[row, 60 - rim[row]:] = True
    fill[20, 54:57] = True                                 # a 3 px finger out of the rim
    values[:, fill] = 0.0
    values[:, 40:44, 20:23] = 0.0                          # a 4×3 cluster of clipped targets
    profile.pop("nodata", None)
    with rasterio.open(tmp_path / "s1_zeros.tif", "w", **profile) as dst:
        dst.write(values)
    with rasterio.open(s2_path) as s2, rasterio.open(tmp_path / "s1_zeros.tif") as s1, \
            S1OnS2Grid(s1, s2) as grid:
        read = grid.read(Window(0, 0, 96, 96))
    missing = ~np.isfinite(read).all(axis=0)
    np.testing.assert_array_equal(missing, fill)
    assert (read[:, 40:44, 20:23] == 0).all()
