"""Ensembles (models/ensemble.py): several checkpoints exported as one network whose outputs are
the mean of theirs, through the `export` command, ONNX and the engine's torch path alike."""
import numpy as np
import pytest
import torch

from sar_cloud_removal.core.model_spec import load_spec, make_spec, read_checkpoint, resolve_model
from sar_cloud_removal.models.export import initial_network, load_network, save_checkpoint
from sar_cloud_removal.models.registry import build, resolved_config

from test_export import real_batch, run_onnx, run_torch

SMALL = {"width": 4, "sar_width": 2}


def _member(tmp_path, name, seed, tile_size=256):
    config = resolved_config("ibhfn", SMALL)
    network = initial_network("ibhfn", config, seed=seed).eval()
    save_checkpoint(network, make_spec(name, "1.0.0", "ibhfn", config, tile_size=tile_size,
                                       keep_clear=(0.6, 0.7)), tmp_path / f"{name}.pt")
    return network


def test_exported_ensemble_outputs_the_mean_of_its_members_on_real_data(tmp_path, cli,
                                                                      real_triplet):
    first, second = _member(tmp_path, "a", seed=1), _member(tmp_path, "b", seed=2, tile_size=128)
    result = cli("export", "--checkpoint", tmp_path / "a.pt", tmp_path / "b.pt",
                 "--out", tmp_path / "pair.onnx", "--name", "pair")
    assert result.returncode == 0, result.stderr
    spec = load_spec(resolve_model(tmp_path / "pair.onnx"))
    assert (spec.name, spec.architecture, spec.keep_none, spec.keep_full, spec.tile_size) == \
        ("pair", "ensemble", 0.6, 0.7, 256)   # tiling and levels are the first member's
    assert [m["architecture"] for m in spec.config["members"]] == ["ibhfn", "ibhfn"]

    s2, s1 = real_batch(real_triplet, [(0, 0, 64, 64), (120, 96, 64, 64)])
    (r1, g1), (r2, g2) = run_torch(first, s2, s1), run_torch(second, s2, s1)
    assert np.abs(r1 - r2).max() > 1e-3 and np.abs(g1 - g2).max() > 1e-3  # members differ
    want = ((r1 + r2) / 2, (g1 + g2) / 2)
    rebuilt, _ = load_network(tmp_path / "pair.pt")       # the torch backend's path
    for got in (run_onnx(tmp_path / "pair.onnx", s2, s1), run_torch(rebuilt, s2, s1)):
        for value, expected in zip(got, want):
            np.testing.assert_allclose(value, expected, atol=1e-5)
    saved = read_checkpoint(tmp_path / "pair.pt")["state_dict"]
    for index, member in enumerate((first, second)):
        for key, tensor in member.state_dict().items():
            assert torch.equal(saved[f"members.{index}.{key}"], tensor)


def test_an_ensemble_of_one_network_twice_is_that_network(real_triplet):
    config = resolved_config("ibhfn", SMALL)
    single = initial_network("ibhfn", config, seed=3).eval()
    twice = build("ensemble", members=[{"architecture": "ibhfn", "config": config}] * 2).eval()
    for slot in twice.members:
        slot.load_state_dict(single.state_dict())
    s2, s1 = real_batch(real_triplet, [(8, 8, 64, 64)])
    for got, want in zip(run_torch(twice, s2, s1), run_torch(single, s2, s1)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert twice.size_multiple == single.size_multiple


def test_members_on_other_data_conventions_are_refused_in_one_sentence(tmp_path, cli):
    _member(tmp_path, "a", seed=1)
    network = _member(tmp_path, "c", seed=2)
    spec = read_checkpoint(tmp_path / "c.pt")["spec"]
    save_checkpoint(network, {**spec, "s1_db_range": [-30, 5]}, tmp_path / "c.pt")
    result = cli("export", "--checkpoint", tmp_path / "a.pt", tmp_path / "c.pt",
                 "--out", tmp_path / "bad.onnx")
    assert result.returncode == 2
    assert "differ in s1_db_range" in result.stderr and not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("members, message", [
    ([], "at least one member"),
    ([{"architecture": "ibhfn"}], "each member is"),
    ([{"architecture": "ensemble", "config": {}}], "cannot be ensembles"),
])
def test_bad_member_lists_are_refused_as_configuration_errors(members, message):
    from sar_cloud_removal.core.errors import UserError
    with pytest.raises(UserError, match=message):
        build("ensemble", members=members)
