"""`sar-cloud-removal remove` as a user runs it, against every bad input of SPEC §7.

Each refusal must exit non-zero with one sentence on stderr naming the problem (never a
traceback) and leave the output folder exactly as it was.
"""
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import georasters
import tiny_models
from conftest import answer_ctrl_c
from georasters import ORIGIN, files_in
from sar_cloud_removal.core.model_spec import S2_BANDS


@pytest.fixture
def scene(tmp_path):
    """Inputs in tmp_path/in, outputs go to tmp_path/out; returns (in folder, out folder)."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    georasters.pair(inputs, rows=96, cols=80)
    tiny_models.identity_onnx(inputs / "id.onnx", tile_size=32, overlap=8)
    return inputs, outputs


def _remove(cli, inputs, outputs, *extra, s2="s2.tif", s1="s1.tif", model="id.onnx"):
    return cli("remove", "--s2", inputs / s2, "--s1", inputs / s1, "--out", outputs / "r.tif",
               "--model", inputs / model, *extra)


def _assert_refused(proc, outputs, *words):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("error: ") and message.endswith("."), message
    for word in words:
        assert word in message, message
    assert files_in(outputs) == set()


def test_a_good_run_exits_0_and_writes_both_outputs(cli, scene):
    inputs, outputs = scene
    proc = _remove(cli, inputs, outputs, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert files_in(outputs) == {"r.tif", "r_gate.tif"}
    assert "Restored" in proc.stdout and "onnxruntime/cpu" in proc.stdout
    with rasterio.open(inputs / "s2.tif") as s2, rasterio.open(outputs / "r.tif") as out:
        np.testing.assert_array_equal(out.read(), s2.read())


def test_images_that_do_not_overlap(cli, scene):
    inputs, outputs = scene
    georasters.write_tif(inputs / "far.tif", georasters.s1_db(96, 80),
                         transform=from_origin(ORIGIN[0] - 90000, ORIGIN[1], 10, 10))
    _assert_refused(_remove(cli, inputs, outputs, s1="far.tif"), outputs, "do not overlap")


@pytest.mark.parametrize("which, bands, words", [("s2", 10, ("S2", "10 bands")),
                                                 ("s1", 3, ("S1", "3 bands"))])
def test_wrong_band_counts(cli, scene, which, bands, words):
    inputs, outputs = scene
    data = (georasters.s2_dn(96, 80) if which == "s2" else georasters.s1_db(96, 80))[:bands]
    if len(data) < bands:
        data = np.concatenate([data, data[:bands - len(data)]])
    georasters.write_tif(inputs / "odd.tif", data)
    _assert_refused(_remove(cli, inputs, outputs, **{which: "odd.tif"}), outputs, *words)


def test_aoi_outside_the_scene(cli, scene):
    inputs, outputs = scene
    _assert_refused(_remove(cli, inputs, outputs, "--aoi", "10.0,50.0,10.1,50.1,EPSG:4326"),
                    outputs, "AOI", "outside")


def test_nan_and_nodata_areas_succeed_and_are_written_as_nodata(cli, scene):
    inputs, outputs = scene
    dn = georasters.s2_dn(96, 80, low=1)
    dn[:, :10, :] = 0
    s1 = georasters.s1_db(96, 80)
    s1[:, 50:60, 20:30] = np.nan
    georasters.write_tif(inputs / "s2_holes.tif", dn, nodata=0)
    georasters.write_tif(inputs / "s1_holes.tif", s1)
    proc = _remove(cli, inputs, outputs, "--quiet", s2="s2_holes.tif", s1="s1_holes.tif")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(outputs / "r.tif") as out, rasterio.open(outputs / "r_gate.tif") as gate:
        restored, confidence = out.read(), gate.read(1)
        assert out.nodata == 0
    assert (restored[:, :10] == 0).all() and (restored[:, 50:60, 20:30] == 0).all()
    assert np.isnan(confidence[:10]).all() and np.isnan(confidence[50:60, 20:30]).all()
    assert (restored[:, 10:50] == dn[:, 10:50]).all() and (confidence[10:50] == 1).all()


@pytest.mark.parametrize("out", ["no_such_folder/r.tif", "a_file.txt/r.tif"])
def test_unwritable_output_path(cli, scene, out):
    inputs, outputs = scene
    (outputs.parent / "a_file.txt").write_text("x")
    proc = cli("remove", "--s2", inputs / "s2.tif", "--s1", inputs / "s1.tif",
               "--out", outputs.parent / out, "--model", inputs / "id.onnx")
    _assert_refused(proc, outputs, "does not exist")
    assert not (outputs.parent / "no_such_folder").exists()


def test_corrupt_model_file(cli, scene):
    inputs, outputs = scene
    tiny_models.truncated_copy(inputs / "id.onnx", inputs / "broken.onnx")
    _assert_refused(_remove(cli, inputs, outputs, model="broken.onnx"), outputs, "broken.onnx")


def test_model_trained_on_other_bands(cli, scene):
    inputs, outputs = scene
    spec = tiny_models.tiny_spec()
    spec["s2_bands"] = [band for band in S2_BANDS if band != "B10"]
    tiny_models.onnx_with_spec(inputs / "twelve.onnx", spec)
    _assert_refused(_remove(cli, inputs, outputs, model="twelve.onnx"), outputs, "bands")


def test_ctrl_c_mid_run_leaves_nothing(scene):
    """Interrupt a run once it has started writing: exit 130 and an empty output folder."""
    inputs, outputs = scene
    georasters.pair(inputs, rows=512, cols=512)
    tiny_models.identity_onnx(inputs / "small_tiles.onnx", tile_size=16, overlap=4)
    command = [sys.executable, "-m", "sar_cloud_removal.cli", "remove", "--quiet",
               "--s2", inputs / "s2.tif", "--s1", inputs / "s1.tif", "--out", outputs / "r.tif",
               "--model", inputs / "small_tiles.onnx", "--batch-size", "1"]
    proc = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True,
                            preexec_fn=answer_ctrl_c)
    deadline = time.monotonic() + 60
    while not files_in(outputs) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    # Temporary files only: the two partial images and their scratch files (overview levels).
    assert all(".partial.tif" in name for name in files_in(outputs))
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "no output was written" in stderr
    assert files_in(outputs) == set()


def test_a_full_disk_is_reported_and_leaves_nothing(scene):
    """GDAL reports failed block writes only in its log; the CLI must still fail cleanly."""
    inputs, outputs = scene
    georasters.pair(inputs, rows=512, cols=512)
    tiny_models.identity_onnx(inputs / "big_tiles.onnx", tile_size=128, overlap=16)

    def small_disk():   # in the child: files stop growing at 2 MB, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, resource.RLIM_INFINITY))

    command = [sys.executable, "-m", "sar_cloud_removal.cli", "remove", "--quiet",
               "--s2", inputs / "s2.tif", "--s1", inputs / "s1.tif", "--out", outputs / "r.tif",
               "--model", inputs / "big_tiles.onnx"]
    proc = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=120,
                          preexec_fn=small_disk)
    _assert_refused(proc, outputs, "did not complete", "disk space")


def _hh_hv(path):
    georasters.write_tif(path, georasters.s1_db(96, 80))
    with rasterio.open(path, "r+") as dataset:
        dataset.descriptions = ("HH", "HV")


@pytest.mark.parametrize("which, make, words", [
    ("s2", lambda p: georasters.write_tif(p, georasters.s2_dn(96, 80)[:12]),
     ("12 bands", "Level-2A", "Level-1C")),
    ("s1", lambda p: georasters.write_tif(p, georasters.s1_db(96, 80)[:1]),
     ("one band", "single polarisation", "VV + VH")),
    ("s1", _hh_hv, ("HH/HV polarisation", "VV + VH")),
    ("s2", lambda p: georasters.write_tif(p, np.zeros((13, 96, 80), np.uint16)),
     ("S2 image", "no valid pixel")),
    ("s1", lambda p: georasters.write_tif(p, np.zeros((2, 96, 80), np.float32)),
     ("S1 image", "no valid pixel", "swath")),
])
def test_inputs_the_network_cannot_take_or_with_nothing_to_restore(cli, scene, which, make,
                                                                   words):
    inputs, outputs = scene
    make(inputs / "odd.tif")
    _assert_refused(_remove(cli, inputs, outputs, **{which: "odd.tif"}), outputs, *words)


def test_l2a_exports_and_scenes_too_cloudy_for_the_offset_are_refused(cli, scene, shared_data):
    inputs, outputs = scene
    l2a = next((shared_data / "bigearthnet_example" / "BigEarthNet-S2-Example").iterdir())
    _assert_refused(_remove(cli, inputs, outputs, s2=l2a), outputs, "Level-2A", "Level-1C")
    bright = (shared_data / "sen12mscrts_s2_timeseries" /
              "s2_ROIs2017_146_ImgNo_29_2018-12-22_patch_0.tif")
    with rasterio.open(bright) as src:
        crs, transform = src.crs.to_string(), src.transform
    georasters.write_tif(inputs / "s1_there.tif", georasters.s1_db(256, 256), crs=crs,
                         transform=transform)
    _assert_refused(_remove(cli, inputs, outputs, s2=bright, s1="s1_there.tif"), outputs,
                    "Cannot tell", "--s2-offset")
    proc = _remove(cli, inputs, outputs, "--s2-offset", "0", "--quiet", s2=bright,
                   s1="s1_there.tif")
    assert proc.returncode == 0, proc.stderr
