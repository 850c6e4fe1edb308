"""Map-ready outputs: both rasters are Cloud-Optimized GeoTIFFs with internal overviews, valid by
GDAL's own COG rules, with band descriptions, and still written atomically."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import georasters
import tiny_models
from georasters import files_in
from sar_cloud_removal.core import geotiff
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.geotiff import GATE_DESCRIPTION, OutputPair, tiff_ifds
from sar_cloud_removal.core.model_spec import S2_BANDS

ROWS, COLS = 1100, 700      # three overview levels, down to one 256-px file tile


def _gdal_validate(path):
    """GDAL's validate_cloud_optimized_geotiff (Debian's python3-gdal): (errors, warnings)."""
    validator = pytest.importorskip("osgeo_utils.samples.validate_cloud_optimized_geotiff")
    errors, warnings, _ = validator.validate(str(path), full_check=True)
    return errors, warnings


def _check_layout(path):
    """The COG layout read from the file itself: the full-resolution IFD first, then the
    overviews' IFDs by decreasing size, all before any pixel data; the smallest overview's
    data first and the full resolution's last."""
    ifds = tiff_ifds(path)
    assert [ifd["subfile"] for ifd in ifds] == [0] + [1] * (len(ifds) - 1)
    sizes = [(ifd["width"], ifd["height"]) for ifd in ifds]
    assert sizes == sorted(sizes, reverse=True) and all(ifd["tiled"] for ifd in ifds)
    first_data = [min(ifd["offsets"]) for ifd in ifds]
    assert max(ifd["offset"] for ifd in ifds) < min(first_data)
    assert first_data == sorted(first_data, reverse=True)
    return ifds


def _mean_2x2(values, valid):
    """Average of the valid pixels of each 2 x 2 cell (rows and cols even here)."""
    b, r, c = values.shape
    sums = np.where(valid, values, 0).reshape(b, r // 2, 2, c // 2, 2).sum(axis=(2, 4),
                                                                             dtype=np.float64)
    counts = valid.reshape(r // 2, 2, c // 2, 2).sum(axis=(1, 3))
    return sums / np.maximum(counts, 1), counts


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cog")
    dn = georasters.s2_dn(ROWS, COLS, low=1)
    dn[:, 100:180, 50:331] = 0                       # S2 nodata: overviews must ignore it
    s2, s1 = georasters.pair(folder, s2=dn, s1=georasters.s1_db(ROWS, COLS), s2_nodata=0)
    model = tiny_models.identity_onnx(folder / "id.onnx", 128, 32)
    result = remove_clouds(RemovalRequest(str(s2), str(s1), str(folder / "out.tif"),
                                          model=str(model), raw_network=True))
    return result, dn, folder


@pytest.mark.parametrize("which", ["out_path", "gate_path"])
def test_both_outputs_are_valid_cogs_with_overviews(restored, which):
    result, _, _ = restored
    path = getattr(result, which)
    ifds = _check_layout(path)
    assert [(ifd["width"], ifd["height"]) for ifd in ifds] == [(700, 1100), (350, 550),
                                                               (175, 275), (88, 138)]
    errors, warnings = _gdal_validate(path)
    assert errors == [] and warnings == []
    with rasterio.open(path) as dataset:
        assert dataset.overviews(1) == [2, 4, 8]
        assert dataset.profile["compress"] == "deflate"


def test_bands_are_described_and_nodata_kept(restored):
    result, _, _ = restored
    with rasterio.open(result.out_path) as out, rasterio.open(result.gate_path) as gate:
        assert out.descriptions == tuple(S2_BANDS) and "B8A" in out.descriptions
        assert gate.descriptions == (GATE_DESCRIPTION,)
        assert out.nodata == 0 and np.isnan(gate.nodata)


def test_full_resolution_is_exact_and_overviews_average_the_valid_pixels(restored):
    result, dn, folder = restored
    valid = (dn != 0).any(axis=0)
    with rasterio.open(result.out_path) as out:
        np.testing.assert_array_equal(out.read(), dn)
        level = out.read(out_shape=(13, ROWS // 2, COLS // 2))
    means, counts = _mean_2x2(dn, valid)
    expected = np.where(counts > 0, np.floor(means + 0.5), 0)
    np.testing.assert_array_equal(level, expected)
    with rasterio.open(result.gate_path) as gate:
        level = gate.read(1, out_shape=(ROWS // 2, COLS // 2))
    assert np.isnan(level[counts == 0]).all() and (level[counts > 0] == 1).all()
    assert files_in(folder) == {"s2.tif", "s1.tif", "id.onnx", "out.tif", "out_gate.tif"}


def test_windows_off_the_block_grid_still_give_valid_cogs(tmp_path):
    """Other writers' windows (here 300-px strips): GDAL then computes the overviews."""
    pair = OutputPair(tmp_path / "o.tif", tmp_path / "g.tif", crs="EPSG:32631",
                      transform=from_origin(600000, 5000000, 10, 10), width=600, height=900,
                      dtype="uint16", bands=13, band_names=S2_BANDS)
    data = georasters.s2_dn(900, 600, low=1)
    with pair:
        for row in range(0, 900, 300):
            pair.write(Window(0, row, 600, 300), data[:, row:row + 300],
                       np.ones((1, 300, 600), np.float32))
        pair.commit()
    assert files_in(tmp_path) == {"o.tif", "g.tif"}
    for path in (tmp_path / "o.tif", tmp_path / "g.tif"):
        _check_layout(path)
        assert _gdal_validate(path) == ([], [])
    with rasterio.open(tmp_path / "o.tif") as out:
        np.testing.assert_array_equal(out.read(), data)
        assert out.overviews(1) == [2, 4] == geotiff.overview_factors(900, 600)


def test_a_file_cut_short_is_not_committed(restored, tmp_path):
    """A full disk cuts the COG short: its headers then point past its end."""
    result, _, _ = restored
    cut = tmp_path / "cut.tif"
    data = open(result.out_path, "rb").read()
    cut.write_bytes(data[:len(data) - 1000])
    with pytest.raises(UserError, match="did not complete"):
        geotiff._check_complete(cut, tmp_path / "target.tif")
    geotiff._check_complete(result.out_path, tmp_path / "target.tif")   # the whole file passes


def test_a_run_that_cannot_fit_on_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    """Uncompressed temporaries need room: a folder without it is refused in one sentence, and
    nothing is left behind; with room enough the same pair is written."""
    real_usage = geotiff.shutil.disk_usage
    pair_args = dict(crs="EPSG:32631", transform=from_origin(600000, 5000000, 10, 10),
                     width=1000, height=1000, dtype="uint16", bands=13)
    raw = 1000 * 1000 * (13 * 2 + 4)            # restored uint16 + gate float32

    def usage_with(free):
        def usage(path):
            return real_usage(path)._replace(free=free)
        return usage

    need = int(raw * geotiff.DISK_NEED_FACTOR)
    for free, message in ((need // 2, r"has 30 MB free but this run needs about 60 MB"),
                          (need - 1, "free some space or choose another folder")):
        monkeypatch.setattr(geotiff.shutil, "disk_usage", usage_with(free))
        with pytest.raises(UserError, match=message):
            with OutputPair(tmp_path / "o.tif", tmp_path / "g.tif", **pair_args):
                pass
        assert files_in(tmp_path) == set()
    monkeypatch.setattr(geotiff.shutil, "disk_usage", usage_with(need))
    with OutputPair(tmp_path / "o.tif", tmp_path / "g.tif", **pair_args) as pair:
        pair.write(Window(0, 0, 1000, 1000), georasters.s2_dn(1000, 1000, low=1),
                   np.ones((1, 1000, 1000), np.float32))
        pair.commit()
    assert files_in(tmp_path) == {"o.tif", "g.tif"}
