"""The output grid: AOI snapping, S1/S2 overlap, and S1 resampled onto S2 windows."""
import numpy as np
import pytest
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

import georasters
from georasters import ORIGIN, write_tif
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.grid import (S1OnS2Grid, open_raster, output_window,
                                         require_georeferencing, spread_sample)

X0, Y0 = ORIGIN


@pytest.fixture
def s2_path(tmp_path):
    return write_tif(tmp_path / "s2.tif", georasters.s2_dn(120, 100))


def _s1(tmp_path, data, transform, crs=georasters.UTM31, nodata=None):
    return write_tif(tmp_path / "s1.tif", data, crs=crs, transform=transform, nodata=nodata)


def test_missing_and_unreadable_files_are_explained(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_raster(tmp_path / "nope.tif", "S2")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(UserError, match="not a raster"):
        open_raster(text, "S2")


def test_rasters_without_georeferencing_are_refused(tmp_path):
    path = write_tif(tmp_path / "plain.tif", georasters.s2_dn(8, 8), crs=None)
    with open_raster(path, "S2") as dataset, pytest.raises(UserError, match="georeferencing"):
        require_georeferencing(dataset, "S2")


def test_default_window_is_the_s1_s2_overlap(tmp_path, s2_path):
    # S1 starts 30 px right of and 20 px below the S2 origin and runs past its far corner.
    s1 = _s1(tmp_path, georasters.s1_db(200, 200), from_origin(X0 + 300, Y0 - 200, 10, 10))
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1:
        assert output_window(s2, s1) == Window(30, 20, 70, 100)


def test_aoi_in_the_s2_crs_is_widened_to_whole_pixels(tmp_path, s2_path):
    s1 = _s1(tmp_path, georasters.s1_db(120, 100), from_origin(X0, Y0, 10, 10))
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1:
        # x 15.5 .. 40.2 px, y 10 .. 25.5 px from the origin (rows count downwards)
        aoi = (X0 + 155, Y0 - 255, X0 + 402, Y0 - 100)
        assert output_window(s2, s1, aoi) == Window(15, 10, 26, 16)
        on_edges = (X0 + 150, Y0 - 250, X0 + 400, Y0 - 100)
        assert output_window(s2, s1, on_edges) == Window(15, 10, 25, 15)
        beyond = (X0 - 1000, Y0 - 5000, X0 + 200, Y0 + 1000)   # clipped to the scene
        assert output_window(s2, s1, beyond) == Window(0, 0, 20, 120)


def test_aoi_in_another_crs_covers_the_same_ground(tmp_path, s2_path):
    s1 = _s1(tmp_path, georasters.s1_db(120, 100), from_origin(X0, Y0, 10, 10))
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1:
        target = Window(20, 30, 40, 50)
        lonlat = transform_bounds(s2.crs, "EPSG:4326", *s2.window_bounds(target))
        window = output_window(s2, s1, lonlat, "EPSG:4326")
    # A lon/lat box around a UTM box is slightly larger than it (grid convergence).
    assert window.col_off <= 20 and window.row_off <= 30
    assert window.col_off + window.width >= 60 and window.row_off + window.height >= 80
    assert window.width <= 42 and window.height <= 52


@pytest.mark.parametrize("aoi, crs, message", [
    ((X0 + 5000, Y0 - 500, X0 + 6000, Y0 - 100), None, "outside"),
    ((2.0, 45.0, 2.1, 45.1), "EPSG:4326", "outside"),
    ((X0 + 400, Y0 - 100, X0 + 100, Y0 - 50), None, "empty"),
    ((X0 + 100, Y0 - 400, X0 + 400, Y0 - 100), "EPSG:999999", "not a coordinate reference"),
])
def test_bad_aois_are_refused(tmp_path, s2_path, aoi, crs, message):
    s1 = _s1(tmp_path, georasters.s1_db(120, 100), from_origin(X0, Y0, 10, 10))
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1:
        with pytest.raises(UserError, match=message):
            output_window(s2, s1, aoi, crs)


def test_images_that_do_not_overlap_are_refused(tmp_path, s2_path):
    s1 = _s1(tmp_path, georasters.s1_db(50, 50), from_origin(X0 + 5000, Y0, 10, 10))
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1:
        with pytest.raises(UserError, match="do not overlap"):
            output_window(s2, s1)


def test_s1_on_the_s2_grid_comes_back_unchanged_and_nan_outside(tmp_path, s2_path):
    data = georasters.s1_db(50, 40)
    s1 = _s1(tmp_path, data, from_origin(X0 + 100, Y0 - 50, 10, 10))   # 10 px right, 5 down
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1, S1OnS2Grid(s1, s2) as grid:
        window = grid.read(Window(0, 0, 60, 70))
    np.testing.assert_array_equal(window[:, 5:55, 10:50], data)
    outside = np.ones((70, 60), bool)
    outside[5:55, 10:50] = False
    assert np.isnan(window[:, outside]).all()


def test_coarser_s1_is_resampled_bilinearly_onto_s2_pixels(tmp_path, s2_path):
    """Bilinear resampling reproduces a linear field exactly, so the expected values are known."""
    res = 20.0
    rows, cols = np.mgrid[0:70, 0:60]
    x, y = X0 - 40 + (cols + 0.5) * res, Y0 + 40 - (rows + 0.5) * res   # S1 pixel centres
    field = np.stack([(x - X0) * 0.01 - 20, (Y0 - y) * 0.005 - 10]).astype(np.float32)
    s1 = _s1(tmp_path, field, from_origin(X0 - 40, Y0 + 40, res, res))
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1, S1OnS2Grid(s1, s2) as grid:
        got = grid.read(Window(10, 20, 30, 40))
    rows, cols = np.mgrid[20:60, 10:40]
    x, y = X0 + (cols + 0.5) * 10, Y0 - (rows + 0.5) * 10                # S2 pixel centres
    expected = np.stack([(x - X0) * 0.01 - 20, (Y0 - y) * 0.005 - 10])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_s1_nodata_becomes_nan(tmp_path, s2_path):
    data = georasters.s1_db(120, 100)
    data[:, 40:60, 30:50] = -9999
    s1 = _s1(tmp_path, data, from_origin(X0, Y0, 10, 10), nodata=-9999)
    with open_raster(s2_path, "S2") as s2, open_raster(s1, "S1") as s1, S1OnS2Grid(s1, s2) as grid:
        window = grid.read(Window(0, 0, 100, 120))
    assert np.isnan(window[:, 40:60, 30:50]).all()
    assert np.isfinite(window[:, :40]).all()


def test_spread_sample_reaches_the_window_corners_and_marks_nodata(tmp_path):
    rows, cols = np.mgrid[0:300, 0:250]
    data = np.stack([rows * 1000 + cols, np.full((300, 250), 7)]).astype(np.int32)
    data[1, 299, 249] = -1
    path = write_tif(tmp_path / "ids.tif", data, nodata=-1)
    with open_raster(path, "S2") as dataset:
        whole = spread_sample(dataset, patches=3, size=20)
        part = spread_sample(dataset, Window(30, 40, 100, 120), patches=3, size=20)
    assert whole.shape == (2, 9 * 20 * 20)
    assert {0, 299249, 149125} <= set(whole[0].astype(int))     # corners and the middle
    assert np.isnan(whole[1]).sum() == 1
    ids = part[0].astype(int)
    assert (ids // 1000).min() == 40 and (ids // 1000).max() == 159
    assert (ids % 1000).min() == 30 and (ids % 1000).max() == 129
