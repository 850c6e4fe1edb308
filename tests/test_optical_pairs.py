"""Real clouds without S1 as gate-only examples: which pairs are read and how they are labelled,
and the loss weights that keep them from teaching the restoration."""
import numpy as np
import pytest
import torch

from sar_cloud_removal.models import losses
from sar_cloud_removal.models.network_io import NetworkOutput
from sar_cloud_removal.training import optical_pairs
from sar_cloud_removal.training.dataset import RealTriplets
from sar_cloud_removal.training.regions import visible_excess

# Report and selection scenes of docs/EVALUATION.md: none may be taught, even to the gate.
HELD_OUT_SCENES = ("spring_140", "summer_73", "summer_119", "winter_112")


@pytest.fixture(scope="module")
def gate_only(shared_data):
    return optical_pairs.load_optical_pairs(shared_data)


def test_pairs_and_series_dates_are_read_without_bad_references_or_snow(gate_only):
    names = [t.name for t in gate_only]
    pairs = [n for n in names if n.startswith("s2_pairs/")]
    dates = [n.split("/")[1] for n in names if n.startswith("series/")]
    # 13 pairs, less spring 26 whose "clear" date is white throughout
    assert len(pairs) == 12 and not any("spring_s2_26_" in n for n in pairs)
    assert dates and all(int(d[5:7]) not in optical_pairs.SNOW_MONTHS for d in dates)
    assert not any(scene in name.replace("_s2_", "_") for name in names
                   for scene in HELD_OUT_SCENES)


def test_only_plain_cloud_and_plain_agreement_are_labelled(gate_only):
    for t in gate_only:
        assert not t.s1.any() and t.s1.shape == (2,) + t.cloudy.shape[1:]
        excess = visible_excess(t.cloudy, t.target)
        trusted = t.gate_weight > 0
        assert np.array_equal(t.cloud_mask, excess >= optical_pairs.CLOUD_EXCESS)
        assert trusted[t.cloud_mask].all()
        clear = trusted & ~t.cloud_mask
        assert np.all(np.abs(excess[clear]) <= optical_pairs.CLEAR_AGREEMENT)
    # the labelled share is real: most pairs teach something, shadows and change do not
    assert np.mean([t.gate_weight.mean() > 0.3 for t in gate_only]) > 0.6


def test_gate_only_draws_carry_zero_image_weight_and_their_trust(gate_only):
    spring = next(t for t in gate_only if "spring_s2_39" in t.name)
    example = RealTriplets([spring], image_weight=0.0).draw(np.random.default_rng(0), 256)
    assert example["image_weight"] == 0.0
    trusted = example["gate_weight"] > 0
    assert trusted.mean() == pytest.approx(spring.gate_weight.mean())
    assert set(np.unique(example["clear"][trusted])) == {0.0, 1.0}


def _output(restored, gate, reconstruction=None):
    return NetworkOutput(restored=restored, gate=gate, kl=torch.zeros(()),
                         reconstruction=reconstruction)


def test_an_image_of_weight_zero_changes_no_image_term():
    rng = torch.Generator().manual_seed(0)
    target = torch.rand(2, 13, 24, 24, generator=rng)
    restored = torch.rand(2, 13, 24, 24, generator=rng)
    cloudy = torch.rand(2, 13, 24, 24, generator=rng)
    clear = (torch.rand(2, 24, 24, generator=rng) > 0.5).float()
    gate = torch.rand(2, 1, 24, 24, generator=rng)
    reconstruction = torch.rand(2, 13, 24, 24, generator=rng)
    loss = losses.JointLoss()
    _, alone = loss(_output(restored[:1], gate[:1], reconstruction[:1]), target[:1],
                    cloudy[:1], 2000, clear[:1])
    # the second image is garbage, but weighs nothing in the image terms
    _, mixed = loss(_output(restored, gate, reconstruction), target, cloudy, 2000, clear,
                    torch.tensor([1.0, 0.0]))
    for term in ("l1", "ssim", "sam", "sharpness", "reconstruction"):
        assert mixed[term].item() == pytest.approx(alone[term].item(), rel=1e-5), term
    # as the data loader batches scalars (N×1), the same
    _, batched = loss(_output(restored, gate, reconstruction), target, cloudy, 2000, clear,
                      torch.tensor([[1.0], [0.0]]))
    assert batched["l1"].item() == pytest.approx(alone["l1"].item(), rel=1e-5)
    # the gate term still counts both images
    assert mixed["gate"].item() != pytest.approx(alone["gate"].item(), rel=1e-3)
    # a batch of gate-only images has image terms without gradient, and a finite total
    total, terms = loss(_output(restored.requires_grad_(True), gate, reconstruction), target,
                        cloudy, 2000, clear, torch.zeros(2))
    total.backward()
    assert torch.isfinite(total) and terms["l1"].item() == 0.0
    assert restored.grad.abs().max().item() == 0.0


def test_untrusted_pixels_do_not_move_the_gate_term():
    clear = torch.zeros(1, 8, 8)
    clear[:, :, :4] = 1.0
    weight = torch.ones(1, 8, 8)
    weight[:, :4] = 0.0
    gate = torch.full((1, 1, 8, 8), 0.5)
    other = gate.clone()
    other[:, :, :4] = 0.99            # only where the target is not trusted
    assert losses.gate_loss(gate, clear, weight).item() == pytest.approx(
        losses.gate_loss(other, clear, weight).item())
    assert losses.gate_loss(gate, clear).item() != pytest.approx(
        losses.gate_loss(other, clear).item())
    # all-ones weights are the plain mean
    assert losses.gate_loss(other, clear, torch.ones(1, 8, 8)).item() == pytest.approx(
        losses.gate_loss(other, clear).item())
