"""Generated scenes: two sensors on different grids that agree with each other, written in windows."""
import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, reproject, transform_bounds

from sar_cloud_removal.synthetic import scene
from sar_cloud_removal.synthetic.scene import write_scene

WIDTH, HEIGHT = 300, 280   # more than one 256-row window


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("scene"), WIDTH, HEIGHT, seed=3,
                       cloud_kind="shadow", coverage=0.4)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions


def test_sensors_come_on_different_grids_that_cover_the_same_ground(paths):
    with rasterio.open(paths.s2_cloudy) as s2, rasterio.open(paths.s1) as s1:
        assert s2.crs != s1.crs and s2.crs.is_projected and s1.crs.is_geographic
        assert s2.res == (10.0, 10.0)
        s2_in_s1 = transform_bounds(s2.crs, s1.crs, *s2.bounds)
        assert s1.bounds.left <= s2_in_s1[0] and s1.bounds.bottom <= s2_in_s1[1]
        assert s1.bounds.right >= s2_in_s1[2] and s1.bounds.top >= s2_in_s1[3]
        # About 20 m pixels: half as many rows as the 10 m S2 over the same ground (+ margin).
        assert HEIGHT / 2 <= s1.height <= HEIGHT / 2 + 8


def test_bands_dtypes_and_storage(paths):
    for path, count, dtype, names in [(paths.s2_cloudy, 13, "uint16", scene.S2_BANDS),
                                      (paths.s2_clear, 13, "uint16", scene.S2_BANDS),
                                      (paths.s1, 2, "float32", ("VV", "VH")),
                                      (paths.truth, 2, "float32", None)]:
        data, profile, descriptions = read(path)
        assert data.shape[0] == count and data.dtype == dtype
        assert profile["tiled"] and profile["compress"] == "deflate"
        if names:
            assert descriptions == names


def test_values_are_in_sensor_ranges(paths):
    clear, _, _ = read(paths.s2_clear)
    assert clear.min() >= 1 and clear.max() <= 10000
    assert 300 < np.median(clear[1]) < 2000          # B2 of land, water and towns
    assert np.median(clear[10]) < 100                # B10 sees almost no ground
    s1, _, _ = read(paths.s1)
    assert np.isfinite(s1).all()
    assert -20 < np.median(s1[0]) < -3 and np.median(s1[1]) < np.median(s1[0])


def test_cloudy_differs_from_clear_exactly_where_clouds_and_shadows_are(paths):
    clear, _, _ = read(paths.s2_clear)
    cloudy, _, _ = read(paths.s2_cloudy)
    (cloud, shadow), _, _ = read(paths.truth)
    touched = (cloud > 0) | (shadow > 0)
    assert 0.3 < (cloud > 0).mean() < 0.5 and (shadow > 0.1).any()
    np.testing.assert_array_equal(cloudy[:, ~touched], clear[:, ~touched])
    opaque = cloud > 0.9
    assert (cloudy[1][opaque] > clear[1][opaque]).mean() > 0.9  # all but bright snow


def test_s1_is_registered_with_s2(paths):
    """Water is dark in the NIR and in VV: after reprojection the two must coincide."""
    with rasterio.open(paths.s2_clear) as s2, rasterio.open(paths.s1) as s1:
        nir = s2.read(8)
        vv = np.full(nir.shape, np.nan, dtype=np.float32)
        reproject(s1.read(1), vv, src_transform=s1.transform, src_crs=s1.crs,
                  dst_transform=s2.transform, dst_crs=s2.crs, resampling=Resampling.average)
    water = nir < 400
    assert 0.02 < water.mean() < 0.9
    assert np.median(vv[water]) < -18 < np.median(vv[~water])


def test_the_same_seed_gives_the_same_scene_whatever_the_window_size(paths, tmp_path, monkeypatch):
    monkeypatch.setattr(scene, "WINDOW_COLS", 112)
    again = write_scene(tmp_path, WIDTH, HEIGHT, seed=3, cloud_kind="shadow", coverage=0.4)
    for name in ("s2_cloudy", "s2_clear", "truth"):
        np.testing.assert_array_equal(read(getattr(again, name))[0], read(getattr(paths, name))[0])
    # Interpolation weights are computed relative to each window's source origin: last-bit noise.
    np.testing.assert_allclose(read(again.s1)[0], read(paths.s1)[0], rtol=0, atol=1e-4)
    other = write_scene(tmp_path / "other", WIDTH, HEIGHT, seed=4)
    assert not np.array_equal(read(other.s2_clear)[0], read(paths.s2_clear)[0])
