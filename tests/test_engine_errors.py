"""Bad requests are refused before any compute, and a failed run leaves nothing on disk."""
import os

import numpy as np
import pytest
from rasterio.transform import from_origin

import georasters
import tiny_models
from georasters import ORIGIN, files_in
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.errors import Cancelled, UserError


@pytest.fixture
def scene(tmp_path):
    """A valid S2/S1 pair and identity model; returns (s2, s1, model) paths."""
    s2, s1 = georasters.pair(tmp_path, rows=96, cols=96)
    return s2, s1, tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=32, overlap=8)


def _refused(s2, s1, out, model, match, **request):
    """Run a request that must fail validation: before the model loads or progress starts."""
    calls = []
    with pytest.raises(UserError, match=match) as caught:
        remove_clouds(RemovalRequest(str(s2), str(s1), str(out), model=str(model), **request),
                      progress=lambda fraction, message: calls.append(fraction))
    assert calls == []
    assert len(str(caught.value).splitlines()) == 1
    return caught.value


def test_missing_and_unreadable_inputs(tmp_path, scene):
    s2, s1, model = scene
    _refused(tmp_path / "none.tif", s1, tmp_path / "o.tif", model, "S2 file .* does not exist")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00garbage")
    _refused(s2, junk, tmp_path / "o.tif", model, "S1 file .* not a raster")


def test_wrong_band_counts(tmp_path, scene):
    s2, s1, model = scene
    twelve = georasters.write_tif(tmp_path / "s2_12.tif", georasters.s2_dn(96, 96)[:12])
    _refused(twelve, s1, tmp_path / "o.tif", model, "S2 image .* 12 bands, as a Level-2A .* "
             "needs Level-1C")
    eleven = georasters.write_tif(tmp_path / "s2_11.tif", georasters.s2_dn(96, 96)[:11])
    _refused(eleven, s1, tmp_path / "o.tif", model, "S2 image .* 11 bands but 13")
    vv_only = georasters.write_tif(tmp_path / "vv.tif", georasters.s1_db(96, 96)[:1])
    _refused(s2, vv_only, tmp_path / "o.tif", model, "S1 image .* one band .*single polarisation")
    three = georasters.write_tif(tmp_path / "s1_3.tif", georasters.s1_db(96, 96)[[0, 1, 1]])
    _refused(s2, three, tmp_path / "o.tif", model, "S1 image .* 3 bands but 2")


def test_inputs_without_georeferencing(tmp_path, scene):
    s2, s1, model = scene
    plain_s2 = georasters.write_tif(tmp_path / "plain2.tif", georasters.s2_dn(96, 96), crs=None)
    _refused(plain_s2, s1, tmp_path / "o.tif", model, "S2 image .* no georeferencing")
    plain_s1 = georasters.write_tif(tmp_path / "plain1.tif", georasters.s1_db(96, 96), crs=None)
    _refused(s2, plain_s1, tmp_path / "o.tif", model, "S1 image .* no georeferencing")


def test_images_that_do_not_overlap(tmp_path, scene):
    s2, _, model = scene
    far = georasters.write_tif(tmp_path / "far.tif", georasters.s1_db(96, 96),
                               transform=from_origin(ORIGIN[0] + 50000, ORIGIN[1], 10, 10))
    _refused(s2, far, tmp_path / "o.tif", model, "do not overlap")


def test_aoi_outside_or_empty(tmp_path, scene):
    s2, s1, model = scene
    x, y = ORIGIN
    _refused(s2, s1, tmp_path / "o.tif", model, "outside",
             aoi=(x + 2000, y - 500, x + 3000, y - 100))
    _refused(s2, s1, tmp_path / "o.tif", model, "outside",
             aoi=(-70.0, -10.0, -69.0, -9.0), aoi_crs="EPSG:4326")
    _refused(s2, s1, tmp_path / "o.tif", model, "empty", aoi=(x + 50, y - 50, x + 50, y))


def test_output_paths_that_cannot_be_written_or_would_overwrite_inputs(tmp_path, scene):
    s2, s1, model = scene
    _refused(s2, s1, tmp_path / "missing" / "o.tif", model, "does not exist")
    _refused(s2, s1, s2.parent / "id.onnx" / "o.tif", model, "does not exist")
    _refused(s2, s1, tmp_path, model, "is a folder")
    _refused(s2, s1, tmp_path / "o.img", model, r"must end in \.tif")
    _refused(s2, s1, tmp_path / "o.tif", model, r"must end in \.tif", gate_path=str(tmp_path / "g"))
    _refused(s2, s1, tmp_path / ("a" * 300 + ".tif"), model, "cannot be used .*too long")
    _refused(s2, s1, s2, model, "is the S2 input")
    _refused(s2, s1, tmp_path / "o.tif", model, "is the S1 input", gate_path=str(s1))
    _refused(s2, s1, tmp_path / "o.tif", model, "same file", gate_path=str(tmp_path / "o.tif"))
    assert files_in(tmp_path) == {"s2.tif", "s1.tif", "id.onnx"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder(tmp_path, scene):
    s2, s1, model = scene
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _refused(s2, s1, locked / "o.tif", model, "not writable")


def test_bad_tile_settings_and_batch_size(tmp_path, scene):
    s2, s1, model = scene
    _refused(s2, s1, tmp_path / "o.tif", model, "overlap", tile_size=32, overlap=16)
    _refused(s2, s1, tmp_path / "o.tif", model, "batch size", batch_size=0)
    _refused(s2, s1, tmp_path / "o.tif", model, "offset", s2_offset="baseline-4")


@pytest.mark.parametrize("stop", [Cancelled, KeyboardInterrupt, RuntimeError])
def test_a_run_stopped_midway_leaves_the_folder_as_it_was(tmp_path, scene, stop):
    """Cancel, Ctrl-C or a crash after a few tiles: no output, no temporary file, and an
    output from an earlier run keeps its content."""
    s2, s1, model = scene
    out = tmp_path / "o.tif"
    out.write_bytes(b"earlier result")
    polls = []

    def is_cancelled():
        polls.append(1)
        return stop is Cancelled and len(polls) > 3

    def progress(fraction, message):
        if stop is not Cancelled and fraction > 0.2:
            raise stop("stopped")

    with pytest.raises(stop):
        remove_clouds(RemovalRequest(str(s2), str(s1), str(out), model=str(model), batch_size=1),
                      progress=progress, is_cancelled=is_cancelled)
    assert files_in(tmp_path) == {"s2.tif", "s1.tif", "id.onnx", "o.tif"}
    assert out.read_bytes() == b"earlier result"
    assert stop is not Cancelled or len(polls) == 4


def test_an_area_without_valid_pixels_is_refused_and_nothing_written(tmp_path):
    """S1 all NaN, S2 all zero (the L1C nodata), or the two valid only in different places:
    nothing to restore, one sentence, no file."""
    model = tiny_models.identity_onnx(tmp_path / "m.onnx", tile_size=32, overlap=8)
    s2, s1 = georasters.pair(tmp_path, rows=64, cols=64,
                             s1=np.full((2, 64, 64), np.nan, np.float32))
    _refused(s2, s1, tmp_path / "o.tif", model, "S1 image .* no valid pixel over the area")
    empty = georasters.write_tif(tmp_path / "empty.tif", np.zeros((13, 64, 64), np.uint16))
    _refused(empty, s1, tmp_path / "o.tif", model, "S2 image .* no valid pixel over the area")
    left = georasters.s1_db(64, 64)
    left[:, :, 32:] = np.nan
    s1_left = georasters.write_tif(tmp_path / "s1_left.tif", left)
    right = georasters.s2_dn(64, 64, low=1)
    right[:, :, :40] = 0
    s2_right = georasters.write_tif(tmp_path / "s2_right.tif", right)
    _refused(s2_right, s1_left, tmp_path / "o.tif", model, "no valid pixel where the S2 image")
    assert not [name for name in files_in(tmp_path) if name.startswith(("o", "."))]
