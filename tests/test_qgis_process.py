"""End to end without the desktop: the zip installed into a fresh QGIS profile, the plugin
enabled and `sar_cloud_removal:remove_clouds` run by QGIS's own `qgis_process` on real
SEN12MS-CR data with the shipped model."""
import json
import os
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest
import rasterio

import georasters
from sar_cloud_removal.scripts.qgis_profile import install_plugin

QGIS_PROCESS = shutil.which("qgis_process.bin")  # Debian's `qgis_process` wrapper is broken
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(QGIS_PROCESS is None,
                                 reason="qgis_process.bin not installed (Debian package qgis)")]
PATCH = "ROIs2017_winter_112_p797.tif"


@pytest.fixture(scope="module")
def qgis_env(plugin_zip, tmp_path_factory):
    """Environment of a fresh profile holding only the zip's plugin, enabled by qgis_process."""
    root = tmp_path_factory.mktemp("qgis_config")
    install_plugin(plugin_zip, root)
    runtime = tmp_path_factory.mktemp("xdg_runtime")
    runtime.chmod(0o700)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(root), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(runtime),
               # QGIS's embedded Python needs the venv's onnxruntime; .pth files are not read
               # from PYTHONPATH, so the editable checkout cannot shadow the installed zip.
               PYTHONPATH=sysconfig.get_paths()["purelib"])
    enabled = qgis_process(env, "plugins", "enable", "sar_cloud_removal")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


def qgis_process(env, *args):
    return subprocess.run([QGIS_PROCESS, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def remove_clouds(env, **params):
    return qgis_process(env, "--json", "run", "sar_cloud_removal:remove_clouds", "--",
                        *(f"{key}={value}" for key, value in params.items()))


def test_restores_real_data_with_the_shipped_model(qgis_env, shared_data, tmp_path):
    s2 = shared_data / "sen12mscr" / "s2_cloudy" / PATCH
    done = remove_clouds(qgis_env, S2=s2, S1=shared_data / "sen12mscr" / "s1" / PATCH,
                         OUTPUT=tmp_path / "restored.tif", GATE_OUTPUT=tmp_path / "gate.tif")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert results == {"OUTPUT": str(tmp_path / "restored.tif"),
                       "GATE_OUTPUT": str(tmp_path / "gate.tif")}
    with rasterio.open(s2) as src, rasterio.open(results["OUTPUT"]) as restored, \
            rasterio.open(results["GATE_OUTPUT"]) as gate:
        assert (restored.count, restored.shape, restored.dtypes[0]) == (13, (256, 256), "uint16")
        assert restored.crs == src.crs == gate.crs and restored.transform == src.transform
        assert (gate.count, gate.shape) == (1, (256, 256))
        confidence = gate.read(1)
        assert 0 <= confidence.min() and confidence.max() <= 1
        # This hazy winter scene is mostly clear: pixels the gate is sure of are the input's,
        # the others are restored by the network.
        from sar_cloud_removal.core.keep_clear import KEEP_FULL
        kept = confidence >= KEEP_FULL
        output, original = restored.read(), src.read()
        assert kept.mean() > 0.5
        assert np.array_equal(output[:, kept], original[:, kept])
    assert "onnxruntime on CPU" in done.stdout


def test_wrong_band_count_fails_with_one_sentence_and_no_output(qgis_env, tmp_path):
    # Generated rasters, so that this check of the installed provider runs without the real data.
    s2, _ = georasters.pair(tmp_path, rows=64, cols=64)
    out = tmp_path / "out"
    out.mkdir()
    done = remove_clouds(qgis_env, S2=s2, S1=s2, OUTPUT=out / "restored.tif",
                         GATE_OUTPUT=out / "gate.tif")
    assert done.returncode != 0
    assert f"The S1 image {s2} has 13 bands but 2 are needed (VV, VH)" in done.stdout + done.stderr
    assert list(out.iterdir()) == []


def test_a_zipped_sentinel_2_product_restores_through_qgis_process(qgis_env, shared_data,
                                                                     tmp_path):
    """S2 given as the .zip users download (built in the real format from real pixels), the
    offset setting chosen by index; qgis_process's own parameter check must let the path pass."""
    import safe_builder

    with rasterio.open(shared_data / "sen12mscr" / "s2" / PATCH) as src:
        stack, transform = src.read(), src.transform
    safe = safe_builder.write_safe(tmp_path, safe_builder.native_bands(stack), 32631,
                                   (round(transform.c), round(transform.f)))
    product = safe_builder.zip_product(safe)
    done = remove_clouds(qgis_env, S2=product, S2_OFFSET=1,
                         S1=shared_data / "sen12mscr" / "s1" / PATCH,
                         OUTPUT=tmp_path / "restored.tif", GATE_OUTPUT=tmp_path / "gate.tif")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "S2 DN offset 0 subtracted, as set" in done.stdout + done.stderr
    with rasterio.open(tmp_path / "restored.tif") as restored:
        assert (restored.count, restored.width, restored.height) == (13, 252, 252)
