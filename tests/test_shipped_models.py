"""Every shipped model, not only the default: its two files agree, its card states its headline,
its gate is a trained cloud detector, and the engine keeps a real cloud-free scene bit for bit.

Parametrised over `list_models()`, so a network added to models/weights is held to the same bar
as the default the day it ships (issue "seed networks side by side": each is a shipped model).
"""
import numpy as np
import pytest

from sar_cloud_removal.core.model_spec import (WEIGHTS_DIR, card_headline, list_models, load_spec,
                                               resolve_model)
from sar_cloud_removal.models.export import load_network
from test_export import TOLERANCE, real_batch, run_onnx, run_torch

SHIPPED = list_models()
# A partly cloudy real scene (64 % clear, thick and thin cloud) none of the models trained on: it
# is a selection scene of every shipped run (configs/*.json "selection_packed").
PARTLY_CLOUDY = "5254"


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_has_both_files_with_one_spec_and_a_card(name, real_triplet):
    files = resolve_model(name)
    assert files.onnx_path == WEIGHTS_DIR / f"{name}.onnx"
    assert files.torch_path == WEIGHTS_DIR / f"{name}.pt"
    spec = load_spec(files)
    network, torch_spec = load_network(files.torch_path)
    assert torch_spec == spec.raw
    side = 224    # a multiple of every shipped network's size_multiple (8, 56, 112)
    assert side % spec.size_multiple == 0
    s2, s1 = real_batch(real_triplet, [(16, 16, side, side)])
    for got, want in zip(run_onnx(files.onnx_path, s2, s1), run_torch(network, s2, s1)):
        assert np.abs(got - want).max() <= TOLERANCE
    card = WEIGHTS_DIR / f"{name}.md"
    assert card.read_text(encoding="utf-8").startswith(f"# Model card: {name} {spec.version}\n")
    assert not card_headline(card).startswith("no headline")


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_models_gate_separates_real_cloud_from_clear_ground(name, shared_data,
                                                                      tmp_path):
    """On a real scene the gate ranks the scene's cloud below its clear ground (AUC against the
    cloud mask; an untrained mask head's gate of ones scores 0.5), and is lower under the cloud
    on average."""
    from sar_cloud_removal.core.metrics import gate_auc
    from sar_cloud_removal.training.evaluate import restore_through_engine
    from sar_cloud_removal.training.packed import read_packed

    triplet = read_packed(shared_data / "sen12mscr" / "packed", PARTLY_CLOUDY)
    _, gate, _ = restore_through_engine(triplet, tmp_path, model=name)
    assert gate_auc(gate, triplet.cloud_mask) >= 0.9
    assert gate[~triplet.cloud_mask].mean() - gate[triplet.cloud_mask].mean() >= 0.2


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_keeps_a_real_cloud_free_scene_bit_for_bit(name, shared_data, tmp_path):
    """Cloud-free packed 316 through each shipped model: at least 95 % of the valid pixels come
    out bit-identical (the bar of the issue "Cloud-free output", for every model users can pick),
    at the keep-clear levels in the model's spec (each chosen on the selection scenes)."""
    import rasterio

    from sar_cloud_removal.training.evaluate import restore_through_engine, write_triplet_inputs
    from sar_cloud_removal.training.packed import read_packed

    triplet = read_packed(shared_data / "sen12mscr" / "packed", "316")
    assert not triplet.cloud_mask.any()
    s2_path, _ = write_triplet_inputs(triplet, tmp_path)
    with rasterio.open(s2_path) as src:
        original = src.read()
    _, gate, _ = restore_through_engine(triplet, tmp_path / "kept", model=name)
    with rasterio.open(tmp_path / "kept" / "restored.tif") as src:
        kept = src.read()
    identical = (kept == original).all(axis=0)
    assert identical.mean() >= 0.95, f"only {identical.mean():.1%} of pixels kept"
    # what is kept is kept because the gate says clear: at or above the model's own full level
    assert (gate[identical] >= load_spec(resolve_model(name)).keep_full).mean() >= 0.99


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "ibhfn"])
def test_a_seed_network_is_chosen_by_name_on_the_command_line(name, shared_data, tmp_path):
    """`remove --model NAME` runs that network (the run's spec name is reported and the output
    differs from the default model's under cloud), in a fresh process as a user runs it."""
    import rasterio

    from conftest import run_cli
    from sar_cloud_removal.training.evaluate import write_triplet_inputs
    from sar_cloud_removal.training.packed import read_packed

    triplet = read_packed(shared_data / "sen12mscr" / "packed", PARTLY_CLOUDY)
    s2_path, s1_path = write_triplet_inputs(triplet, tmp_path)
    outputs = {}
    for model in (name, "ibhfn"):
        out = tmp_path / f"{model}.tif"
        done = run_cli("remove", "--s2", s2_path, "--s1", s1_path, "--out", out,
                       "--model", model, "--s2-offset", "0")
        assert done.returncode == 0, done.stderr
        assert f" with {model} on " in done.stdout
        with rasterio.open(out) as src:
            outputs[model] = src.read()
    changed = (outputs[name] != outputs["ibhfn"]).any(axis=0)
    assert changed[triplet.cloud_mask].mean() > 0.5
