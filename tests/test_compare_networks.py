"""The network comparison (training/compare_networks.py): every model scored the same way through
the engine on the same real scenes, one table line and one sheet column each."""
import json

import numpy as np
import pytest
import rasterio
import tiny_models

from sar_cloud_removal.training import compare_networks
from sar_cloud_removal.training.packed import read_packed
from sar_cloud_removal.training.picture_sheet import _GAP, _LABEL, _TITLE, rgb_panel

SCENE = "4287"


@pytest.fixture
def packed(shared_data):
    return shared_data / "sen12mscr" / "packed"


def test_two_models_on_one_real_scene_give_a_table_line_and_a_sheet_column_each(packed,
                                                                               tmp_path):
    identity = tiny_models.identity_onnx(tmp_path / "identity.onnx")
    shifted = tiny_models.shifted_onnx(tmp_path / "shifted.onnx", gate_value=0.0, shift=0.05)
    out, sheet = tmp_path / "compare.json", tmp_path / "sheet.png"
    code = compare_networks.main(["--data", str(packed), "--only", SCENE, "--no-throughput",
                                  "--models", f"{identity},{shifted}", "--out", str(out),
                                  "--sheet", str(sheet)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["scenes"] == [SCENE]
    first, second = report["models"]
    assert first["architecture"] == "identity" and first["parameters"] == 0
    # the identity keeps every pixel (gate 1): exactly the cloudy input's scores
    assert first["mean"]["model"]["psnr"] == pytest.approx(report["cloudy_input"]["psnr"],
                                                           rel=1e-6)
    assert first["mean"]["model"]["gate_clear"] == pytest.approx(1.0)
    # the shifted model's gate 0 writes its brighter output everywhere: a different score
    assert second["mean"]["model"]["psnr"] != pytest.approx(first["mean"]["model"]["psnr"])
    assert second["mean"]["model"]["gate_thick"] == pytest.approx(0.0)

    lines = compare_networks.markdown_table(report["models"],
                                            report["cloudy_input"]).splitlines()
    assert len(lines) == 2 + 1 + 2                       # header, rule, baseline, two models
    assert lines[2].startswith("| cloudy input |")
    assert lines[3].startswith("| identity 0.0.1 | 0.00 | 0.0 | – |")   # no throughput asked
    assert lines[3].endswith("| 1 of 1 |") and len(lines[3].split("|")) == len(lines[0].split("|"))

    # CLOUDY | identity | shifted | TRUTH: each model's column is its own restoration
    triplet = read_packed(packed, SCENE)
    side = triplet.target.shape[-1]
    with rasterio.open(sheet) as src:
        canvas = src.read()
    assert canvas.shape[2] == _LABEL + 4 * (side + _GAP)

    def column(index):
        left = _LABEL + index * (side + _GAP)
        return canvas[:, _TITLE:_TITLE + side, left:left + side]

    assert np.array_equal(column(0), rgb_panel(triplet.cloudy))
    assert np.array_equal(column(3), rgb_panel(triplet.target))
    assert np.abs(column(1).astype(int) - column(0)).max() <= 1      # identity: DN rounding
    assert column(2).astype(int).mean() > column(1).astype(int).mean() + 10   # +0.05 brighter


def test_throughput_is_the_bench_measurement_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_networks, "THROUGHPUT_MEGAPIXELS", 0.02)
    model = tiny_models.identity_onnx(tmp_path / "identity.onnx")
    measured = compare_networks.engine_throughput(str(model), tmp_path / "bench",
                                                  "onnxruntime")
    assert measured["megapixels"] == pytest.approx(0.02, rel=0.05)
    assert measured["mp_per_s"] > 0 and measured["model_mp_per_s"] > 0
    assert measured["peak_rss_mb"] > 50


def test_an_unknown_model_is_one_sentence(packed, capsys):
    assert compare_networks.main(["--data", str(packed), "--only", SCENE, "--no-throughput",
                                  "--models", "no_such_model"]) == 2
    said = capsys.readouterr().err
    assert "Unknown model 'no_such_model'" in said and "Traceback" not in said
