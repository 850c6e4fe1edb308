"""`python -m sar_cloud_removal.cli.demo`: the generated scene goes through the real CLI to a quicklook."""
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from sar_cloud_removal.cli.quicklook import GATE_RAMP

SIZE = 160
pytestmark = pytest.mark.slow  # runs the real default model end to end


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    proc = subprocess.run([sys.executable, "-m", "sar_cloud_removal.cli.demo", "--out", str(out),
                           "--size", str(SIZE), "--adapt-seconds", "5"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_demo_says_where_everything_is(demo):
    out, stdout = demo
    assert "sar-cloud-removal remove --s1" in stdout
    for name in ("restored.tif", "gate.tif", "quicklook.png", "restored_global.tif",
                 "gate_global.tif", "quicklook_global.png"):
        assert str(out / name) in stdout and (out / name).is_file()
    assert "--adapt --adapt-seconds 5" in stdout


def test_restored_and_gate_lie_on_the_s2_grid_with_sane_values(demo):
    out, _ = demo
    with rasterio.open(out / "scene" / "s2_cloudy.tif") as s2, \
            rasterio.open(out / "restored.tif") as restored, rasterio.open(out / "gate.tif") as gate:
        for result in (restored, gate):
            assert (result.crs, result.transform, result.shape) == (s2.crs, s2.transform, s2.shape)
        assert restored.count == 13 and restored.dtypes[0] == "uint16"
        values = restored.read()
        assert 0 < np.median(values[1]) < 10000 and values.std() > 0
        confidence = gate.read(1)
        assert gate.count == 1 and np.isfinite(confidence).all()
        assert confidence.min() >= 0 and confidence.max() <= 1


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_quicklook_shows_three_panels_of_real_content(demo):
    out, _ = demo
    with rasterio.open(out / "quicklook.png") as png:
        assert png.driver == "PNG" and png.count == 3
        image = png.read()
    # Three SIZE-px panels side by side under a title bar.
    assert image.shape[2] > 3 * SIZE and image.shape[1] > SIZE
    panel_row = image[:, image.shape[1] - SIZE // 2]
    cloudy, restored = panel_row[:, 10:SIZE], panel_row[:, SIZE + 20:2 * SIZE]
    assert cloudy.std() > 5 and restored.std() > 5, "stretched panels must not be flat"
    gate = panel_row[:, -SIZE // 2:].T.astype(np.float32)
    # Every gate pixel is a colour of the ramp's segments (nearly collinear with two anchors).
    distance = np.min(np.linalg.norm(gate[:, None] - GATE_RAMP[None], axis=2), axis=1)
    segment = np.linalg.norm(GATE_RAMP[1:] - GATE_RAMP[:-1], axis=1).max()
    assert (distance <= segment / 2 + 1).all()
