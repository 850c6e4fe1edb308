"""`sar-cloud-removal evaluate` on real packed triplets, through the engine's backends."""
import json
import math

import numpy as np
import pytest
import tiny_models

from sar_cloud_removal.core import metrics
from sar_cloud_removal.training.packed import read_packed


@pytest.fixture
def packed(shared_data):
    return shared_data / "sen12mscr" / "packed"


def test_identity_model_scores_exactly_as_the_cloudy_baseline(cli, packed, tmp_path):
    model = tiny_models.constant_gate_onnx(tmp_path / "identity.onnx", 0.7)
    report_path = tmp_path / "report.json"
    result = cli("evaluate", "--data", packed, "--only", "316,581", "--model", model,
                 "--out", report_path)
    assert result.returncode == 0, result.stderr
    assert "MEAN" in result.stdout
    report = json.loads(report_path.read_text())
    table = report_path.with_suffix(".txt").read_text()   # the printed tables, beside the JSON
    assert table.strip() in result.stdout and f"{report['mean']['model']['psnr']:.4f}" in table
    assert report["model"]["backend"] == "onnxruntime"
    assert [row["name"] for row in report["images"]] == ["316", "581"]

    row = report["images"][1]
    triplet = read_packed(packed, "581")
    expected = metrics.image_metrics(triplet.cloudy, triplet.target, triplet.cloud_mask)
    for key in ("psnr", "ssim", "mae", "sam", "cloud_mae"):
        assert row["cloudy_input"][key] == pytest.approx(expected[key], rel=1e-9)
        # the model returns its input, so it scores exactly the baseline
        assert row["model"][key] == pytest.approx(row["cloudy_input"][key], rel=1e-6)
    assert row["cloud_fraction"] == pytest.approx(triplet.cloud_mask.mean())
    # a constant gate separates nothing (blending leaves it constant to float rounding)
    assert row["model"]["gate_auc"] == pytest.approx(0.5, abs=1e-3)
    assert row["gate_mean"] == pytest.approx(0.7)
    assert row["model"]["clear_kept"] == 1.0 and row["model"]["kept"] == 1.0
    # 316 has no cloud: no cloud-only scores (null), and the means skip it
    assert report["images"][0]["model"]["cloud_mae"] is None
    assert report["mean"]["model"]["cloud_mae"] == pytest.approx(row["model"]["cloud_mae"])
    assert report["mean"]["cloudy_input"]["psnr"] == pytest.approx(
        np.mean([r["cloudy_input"]["psnr"] for r in report["images"]]))


def test_a_restoring_model_beats_the_baseline_and_its_gate_is_scored(packed):
    """score_triplet with an oracle that knows the target in cloudy pixels only."""
    from sar_cloud_removal.training.evaluate import score_triplet

    triplet = read_packed(packed, "4287")
    mask = triplet.cloud_mask

    def oracle(s2, s1):
        restored = np.where(mask, triplet.target, s2[0])[None]
        return restored, (~mask).astype(np.float32)[None, None]

    row = score_triplet(oracle, triplet, size_multiple=8)
    assert row["model"]["cloud_mae"] == 0.0
    assert row["model"]["psnr"] > row["cloudy_input"]["psnr"]
    assert row["model"]["gate_auc"] == 1.0
    assert math.isfinite(row["model"]["sam"])
    # every clear pixel is the input's own, every cloudy one the target's
    assert row["model"]["clear_kept"] == 1.0
    assert row["model"]["kept"] == pytest.approx(1.0 - mask.mean(), abs=1e-3)


def test_kept_fractions_count_pixels_equal_to_the_input_dn_in_every_band(packed):
    """One DN changed in one band is a pixel not kept; DN above the network scale's 1.0 (bright
    cloud tops, up to 17 014 in the packed triplets) still compare as themselves."""
    from sar_cloud_removal.training.evaluate import kept_fractions
    from sar_cloud_removal.training.regions import CLEAR, triplet_regions

    triplet = read_packed(packed, "4287")
    regions = triplet_regions(triplet)
    clear = regions == CLEAR
    assert kept_fractions(triplet.cloudy, triplet.cloudy, regions) == {"clear_kept": 1.0,
                                                                       "kept": 1.0}
    bright = triplet.cloudy + 0.5                        # DN 5 000 to 12 939
    assert bright.max() > 1.0
    assert kept_fractions(bright, bright, regions)["kept"] == 1.0
    assert kept_fractions(np.clip(bright, 0, 1), bright, regions)["kept"] < 1.0
    changed = triplet.cloudy.copy()
    rows, cols = np.nonzero(clear)
    changed[4, rows[::2], cols[::2]] += 1e-4            # one DN in B5 of every other clear pixel
    fractions = kept_fractions(changed, triplet.cloudy, regions)
    assert fractions["clear_kept"] == pytest.approx(1 - len(rows[::2]) / len(rows))
    assert fractions["kept"] == pytest.approx(1 - len(rows[::2]) / regions.size)


def test_empty_data_folder_is_one_clear_error(cli, tmp_path):
    model = tiny_models.identity_onnx(tmp_path / "identity.onnx")
    result = cli("evaluate", "--data", tmp_path, "--model", model)
    assert result.returncode == 2
    assert "No triplets were found" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_table_puts_the_baseline_first_and_refuses_mixed_image_sets():
    from sar_cloud_removal.training.report_table import markdown_table

    def report(name, psnr, images=("a", "b")):
        return {"model": {"name": name, "version": "1"},
                "images": [{"name": n} for n in images],
                "mean": {"model": {"psnr": psnr, "gate_auc": None},
                         "cloudy_input": {"psnr": 10.0}}}

    lines = markdown_table([report("full", 20.0), report("no_gate", 18.5)]).splitlines()
    assert lines[2].startswith("| cloudy input (baseline) | 10.0000 |")
    assert lines[3].startswith("| full 1 | 20.0000 |") and lines[4].startswith("| no_gate 1 | 18.5000")
    assert lines[3].endswith("| – |")                 # no gate AUC without a mask
    with pytest.raises(ValueError):
        markdown_table([report("full", 20.0), report("other", 1.0, images=("a",))])


def test_selecting_a_triplet_that_is_not_there_is_one_clear_error(cli, packed, tmp_path):
    model = tiny_models.identity_onnx(tmp_path / "identity.onnx")
    result = cli("evaluate", "--data", packed, "--only", "316,99999", "--model", model)
    assert result.returncode == 2
    assert "99999" in result.stderr and "Traceback" not in result.stderr


def test_simulated_scenes_at_a_given_tile_size_are_scored_through_the_engine(cli, shared_data,
                                                                            tmp_path):
    """--simulated scores real clear pairs under seeded clouds (truth everywhere), and --tile
    reaches the engine: a tile its overlap does not fit is refused by the engine's own check."""
    model = tiny_models.constant_gate_onnx(tmp_path / "identity.onnx", 0.7)
    report_path = tmp_path / "report.json"
    result = cli("evaluate", "--simulated", "sen1floods11", "--data-root", shared_data,
                 "--model", model, "--tile", "128", "--overlap", "32", "--out", report_path)
    assert result.returncode == 0, result.stderr
    row = json.loads(report_path.read_text())["images"][0]
    assert row["name"] == "sen1floods11/Spain_7370579_S1Hand@0.6"
    assert 0.3 < row["cloud_fraction"] < 0.9
    # the identity's output is the cloudy input as written to a uint16 GeoTIFF (DN rounding)
    assert row["model"]["psnr"] == pytest.approx(row["cloudy_input"]["psnr"], rel=1e-3)
    refused = cli("evaluate", "--simulated", "sen1floods11", "--data-root", shared_data,
                  "--model", model, "--tile", "32", "--overlap", "16")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


@pytest.mark.parametrize("args, said", [
    ((), "Nothing to score"),
    (("--simulated", "moon"), "Unknown --simulated source moon"),
])
def test_evaluate_without_scenes_or_with_an_unknown_source_says_so(cli, tmp_path, args, said):
    result = cli("evaluate", "--model", tiny_models.identity_onnx(tmp_path / "id.onnx"), *args)
    assert result.returncode == 2
    assert said in result.stderr and "Traceback" not in result.stderr
