"""The `train` command: a few CPU steps of a tiny IB-HFN, resuming, and two-rank DDP (gloo)."""
import json
import subprocess
import sys

import pytest

from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.model_spec import read_checkpoint
from sar_cloud_removal.training.train import load_config, train

TINY = {
    "name": "tiny", "version": "0.0.1",
    "model": {"architecture": "ibhfn", "config": {"width": 4, "depth": 0, "downsamplings": 2}},
    "data": {"pair_sources": ["dsen2cr_dsp"], "holdout_packed": ["4287"],
             "selection_packed": ["4287"],
             "validation_folders": [], "synthetic_weight": 1.0, "real_weight": 1.0,
             "optical_pairs_weight": 0.5},
    "loss": {"settle_steps": 1, "ramp_steps": 2, "kl_warmup_steps": 2},
    "crop": 32, "batch": 2, "steps": 4, "val_every": 4, "log_every": 2, "threads": 1,
}


def _config(tmp_path, shared_data, **changes):
    config = json.loads(json.dumps(TINY))
    config["data"]["root"] = str(shared_data)
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_few_steps_write_checkpoints_and_a_log_then_resume_continues(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    best = train(load_config(_config(tmp_path, shared_data)), run_dir)
    records = _log(run_dir)
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == [2, 4]
    first = next(r for r in records if r["kind"] == "train")
    assert {"l1", "ssim", "sam", "sharpness", "kl", "total", "lr"} <= set(first)
    vals = [r for r in records if r["kind"] == "val"]
    assert [v["step"] for v in vals] == [4]
    assert 0.0 <= vals[0]["val_gate_auc"] <= 1.0
    assert vals[0]["baseline_psnr"] < 20      # 4287 is half cloud: the input is far off
    assert best["step"] == 4
    saved = read_checkpoint(run_dir / "best.pt")
    assert saved["spec"]["name"] == "tiny" and saved["spec"]["config"]["width"] == 4
    assert read_checkpoint(run_dir / "latest.pt")["step"] == 4

    train(load_config(_config(tmp_path, shared_data, steps=6)), run_dir, resume=True)
    records = _log(run_dir)
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6]
    vals = [r for r in records if r["kind"] == "val"]
    assert [v["step"] for v in vals] == [4, 6]
    assert vals[0]["baseline_psnr"] == vals[1]["baseline_psnr"]    # same held-out scene
    assert read_checkpoint(run_dir / "latest.pt")["step"] == 6
    assert records[-1]["kind"] == "end" and records[-1]["step"] == 6


def test_with_ema_the_chosen_and_resumed_weights_are_the_average(tmp_path, shared_data):
    """best.pt holds the weight average, which differs from the raw weights of latest.pt and
    is carried through --resume."""
    import torch

    from sar_cloud_removal.training.train import WeightAverage

    run_dir = tmp_path / "run"
    train(load_config(_config(tmp_path, shared_data, ema=0.5)), run_dir)
    best, latest = read_checkpoint(run_dir / "best.pt"), read_checkpoint(run_dir / "latest.pt")
    name = "reconstruction.weight"
    assert torch.equal(best["state_dict"][name], latest["ema_state_dict"][name])
    assert not torch.equal(best["state_dict"][name], latest["state_dict"][name])
    train(load_config(_config(tmp_path, shared_data, ema=0.5, steps=6)), run_dir, resume=True)
    assert read_checkpoint(run_dir / "latest.pt")["step"] == 6

    average = WeightAverage(torch.nn.Linear(2, 1), 0.25)
    model = torch.nn.Linear(2, 1)
    expected = 0.25 * average.model.weight + 0.75 * model.weight
    average.update(model)
    assert torch.allclose(average.model.weight, expected)
    with pytest.raises(UserError, match="'ema' must be a decay"):
        WeightAverage(model, 1.0)


def test_missing_checkpoints_and_unknown_keys_are_user_errors(tmp_path, shared_data):
    with pytest.raises(UserError, match="no checkpoint to resume"):
        train(load_config(_config(tmp_path, shared_data)), tmp_path / "empty", resume=True)
    missing_init = _config(tmp_path, shared_data, init=str(tmp_path / "pretrain" / "best.pt"))
    with pytest.raises(UserError, match="does not exist"):
        train(load_config(missing_init), tmp_path / "finetune")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"step": 3}))
    with pytest.raises(UserError, match="unknown keys"):
        load_config(bad)


def test_two_rank_ddp_ends_with_identical_weights(tmp_path, shared_data):
    config = _config(tmp_path, shared_data, steps=3, val_every=100)
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sar_cloud_removal.cli", "train", "--config", str(config), "--out", str(run_dir)],
        capture_output=True, text=True, timeout=300)
    # the ranks' own errors come first in stderr, torchrun's summary last; the log's last
    # record says whether a failed run got as far as its end
    log = run_dir / "log.jsonl"
    last = (log.read_text().splitlines()[-1:] or ["none"]) if log.is_file() else ["no log"]
    assert result.returncode == 0, (result.stderr[:3000] + "\n[...]\n" + result.stderr[-1500:]
                                    + "\nlast log record: " + last[0][:300])
    end = _log(run_dir)[-1]
    assert end["kind"] == "end" and end["world_size"] == 2 and end["step"] == 3
    digests = end["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # rank 0 alone writes: one log line per logged step, not one per rank
    assert [r["step"] for r in _log(run_dir) if r["kind"] == "train"] == [2, 3]


def test_a_tile_size_the_network_cannot_take_stops_the_run_before_it_writes(tmp_path,
                                                                            shared_data):
    """SG-BAFM takes multiples of 112 px: the default 256 px validation tile is refused at once
    (it used to fail at the first checkpoint, after the first validation's minutes)."""
    config = _config(tmp_path, shared_data, model={"architecture": "sgbafm",
                                                   "config": {"width": 8, "window": 7}})
    with pytest.raises(UserError, match="'tile_size' 256 is not a multiple of the sgbafm "
                                        "network's size multiple 112; set it to a multiple "
                                        "such as 224"):
        train(load_config(config), tmp_path / "run")
    assert not (tmp_path / "run").exists()
