"""Scene adaptation on real data: it learns, it knows when not to, it can be cancelled, it is
repeatable, it never touches the shipped weights, and clear pixels are still kept."""
import hashlib

import numpy as np
import pytest
import rasterio

from sar_cloud_removal import adaptation
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds as engine_remove_clouds
from sar_cloud_removal.core.errors import Cancelled, UserError
from sar_cloud_removal.core.keep_clear import KEEP_FULL
from sar_cloud_removal.core.model_spec import resolve_model

STEPS = 20


@pytest.fixture(scope="module")
def floods(shared_data):
    """Sen1Floods11's real S1/S2 chip (EPSG:4326, clear), with a 256² AOI inside it."""
    folder = shared_data / "sen1floods11_sample"
    s2 = folder / "S2" / "Spain_7370579_S2Hand.tif"
    s1 = folder / "S1" / "Spain_7370579_S1Hand.tif"
    with rasterio.open(s2) as src:
        aoi = src.window_bounds(((100, 356), (120, 376)))
    return s2, s1, aoi


def _request(floods, out, **settings):
    s2, s1, aoi = floods
    settings = {"adapt": True, "adapt_seconds": 600, "adapt_steps": STEPS, "threads": 1,
                **settings}
    return RemovalRequest(str(s2), str(s1), str(out), aoi=aoi, **settings)


def _read(path):
    with rasterio.open(path) as src:
        return src.read()


def test_adapting_the_shipped_network_lowers_the_held_out_loss_and_keeps_clear_pixels(
        floods, tmp_path):
    weights = resolve_model("default").torch_path
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    saved = tmp_path / "adapted.pt"
    result = adaptation.remove_clouds(_request(floods, tmp_path / "out.tif", adapt_steps=40,
                                               save_adapted=str(saved)))
    outcome = result.adaptation
    assert outcome.adapted, outcome.message
    assert outcome.adapted_loss < outcome.global_loss
    assert outcome.steps <= 40 and "Adapted to the scene" in result.messages[0]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    assert saved.is_file() and result.backend == "torch"
    # keep-clear holds with the adapted network: confident-clear pixels are the input's
    restored, gate = _read(result.out_path), _read(result.gate_path)[0]
    with rasterio.open(floods[0]) as src:
        original = src.read(window=src.window(*floods[2]))
    kept = gate >= KEEP_FULL
    assert kept.mean() > 0.5
    assert np.array_equal(restored[:, kept], original[:, kept])


def test_a_fixed_seed_and_step_cap_give_identical_results(floods, tmp_path):
    first = adaptation.remove_clouds(_request(floods, tmp_path / "a.tif", seed=3))
    second = adaptation.remove_clouds(_request(floods, tmp_path / "b.tif", seed=3))
    assert first.adaptation.adapted_loss == second.adaptation.adapted_loss
    assert np.array_equal(_read(first.out_path), _read(second.out_path))


def test_a_fully_cloudy_scene_is_not_adapted_and_says_why(shared_data, tmp_path):
    from sar_cloud_removal.training.evaluate import write_triplet_inputs
    from sar_cloud_removal.training.packed import read_packed

    triplet = read_packed(shared_data / "sen12mscr" / "packed", "3968")   # 100 % cloud
    s2, s1 = write_triplet_inputs(triplet, tmp_path)
    result = adaptation.remove_clouds(RemovalRequest(str(s2), str(s1), str(tmp_path / "o.tif"),
                                                     s2_offset=0, adapt=True, threads=1))
    assert not result.adaptation.adapted
    assert result.messages[0].startswith("Scene adaptation skipped")
    assert "restored with the global model" in result.messages[0]
    assert (tmp_path / "o.tif").is_file()


def test_cancelling_during_adaptation_leaves_nothing(floods, tmp_path, monkeypatch):
    """Nothing on disk, and the engine's malloc setting is back for the next run."""
    from sar_cloud_removal.adaptation import scene
    from sar_cloud_removal.core.pipeline import MMAP_THRESHOLD as ENGINE_MMAP_THRESHOLD

    thresholds = []
    monkeypatch.setattr(scene, "set_mmap_threshold", thresholds.append)
    out = tmp_path / "out"
    out.mkdir()
    adapting = []

    def progress(fraction, message):
        adapting.append(message.startswith("adaptation: step"))

    with pytest.raises(Cancelled):
        adaptation.remove_clouds(_request(floods, out / "restored.tif"), progress,
                                 is_cancelled=lambda: any(adapting))
    assert list(out.iterdir()) == []
    assert thresholds[0] > ENGINE_MMAP_THRESHOLD and thresholds[-1] == ENGINE_MMAP_THRESHOLD


def test_the_engine_alone_refuses_an_adapt_request(floods, tmp_path):
    with pytest.raises(UserError, match="above the engine"):
        engine_remove_clouds(_request(floods, tmp_path / "o.tif"))


def test_cli_adapts_and_says_so_in_its_summary(cli, floods, tmp_path):
    s2, s1, aoi = floods
    result = cli("remove", "--s2", s2, "--s1", s1, "--out", tmp_path / "o.tif", 
                 f"--aoi={','.join(map(str, aoi))}", "--adapt", "--adapt-seconds", "8", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "adapted to the scene" in result.stdout or "not adapted" in result.stdout
    assert "Traceback" not in result.stderr


def test_every_pair_tool_finds_every_real_pair_it_names(shared_data):
    """The `adapt_every_pair` tool's list (README: `remove --adapt` on every real pair) names
    files that exist, so it cannot silently skip a pair."""
    from sar_cloud_removal.training.adapt_every_pair import file_pairs

    pairs = file_pairs(shared_data)
    assert len(pairs) == 13
    for name, s2, s1 in pairs:
        assert s2.exists() and s1.is_file(), name
