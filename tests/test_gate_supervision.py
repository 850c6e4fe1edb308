"""What teaches the gate to close and the reconstruction to reconstruct: the gate's targets
from exact simulated masks and real masks, the loss terms, the ConfigILM pairs, the regions and
the fixed selection scenes."""
import math

import numpy as np
import pytest
import torch

from sar_cloud_removal.models import losses
from sar_cloud_removal.models.network_io import NetworkOutput
from sar_cloud_removal.synthetic.clouds import clear_sky_target, simulate_clouds
from sar_cloud_removal.training import pairs, regions
from sar_cloud_removal.training.dataset import (RealTriplets, SyntheticClouds, as_clear_pair,
                                                simulated_triplets)
from sar_cloud_removal.training.packed import read_packed


@pytest.fixture(scope="module")
def packed(shared_data):
    return shared_data / "sen12mscr" / "packed"


def test_simulated_gate_target_is_one_exactly_where_no_cloud_touched(packed):
    clear = read_packed(packed, "316").target
    sample = simulate_clouds(clear, np.random.default_rng(3), kind="shadow", coverage=0.5)
    target = clear_sky_target(sample)
    untouched = (sample.cloud == 0) & (sample.shadow == 0)
    assert untouched.any() and (~untouched).any()
    assert np.all(target[untouched] == 1.0)
    assert np.all(target[~untouched] < 1.0)
    # opaque cloud: the gate must close
    assert target[sample.cloud > 0.9].max() < 0.01
    # and untouched pixels are the clear scene, so keeping them keeps the truth
    assert np.array_equal(sample.cloudy[:, untouched], clear[:, untouched])


def test_haze_below_the_clear_level_is_clear_and_opaque_cloud_still_shuts(packed):
    """clear_below 0.15: a pixel dimmed by at most 15 % targets exactly 1, the target then falls
    as the plain one does from 0, and opaque cloud still asks the gate to close."""
    clear = read_packed(packed, "316").target
    sample = simulate_clouds(clear, np.random.default_rng(3), kind="mixed", coverage=0.7)
    plain, lenient = clear_sky_target(sample), clear_sky_target(sample, 0.15)
    opacity = 1 - (1 - sample.cloud) * (1 - sample.shadow)
    light = (opacity > 0) & (opacity <= 0.15)
    assert light.any() and np.all(lenient[light] == 1.0) and np.all(plain[light] < 1.0)
    assert np.all(lenient >= plain)
    heavier = opacity > 0.15
    assert np.all(lenient[heavier] < 1.0)
    assert lenient[opacity > 0.9].max() < 0.01
    with pytest.raises(ValueError, match="clear_below"):
        clear_sky_target(sample, 1.0)


def test_training_examples_carry_the_gate_target_of_their_source(packed):
    triplet = read_packed(packed, "746")   # partly cloudy, with a real mask
    rng = np.random.default_rng(1)
    real = RealTriplets([triplet]).draw(rng, 256)   # the whole scene, maybe turned
    assert set(np.unique(real["clear"])) == {0.0, 1.0}
    assert real["clear"].mean() == pytest.approx(1 - triplet.cloud_mask.mean())
    synthetic = SyntheticClouds([as_clear_pair(triplet)]).draw(np.random.default_rng(2), 64)
    assert synthetic["clear"].shape == (64, 64)
    assert 0.0 <= synthetic["clear"].min() and synthetic["clear"].max() <= 1.0
    assert np.all(synthetic["gate_weight"] == 1.0)
    # data.synthetic_gate_weight 0: the same draw, its mask left out of the gate's loss only
    silent = SyntheticClouds([as_clear_pair(triplet)], gate_weight=0.0).draw(
        np.random.default_rng(2), 64)
    assert np.all(silent["gate_weight"] == 0.0) and silent["image_weight"] == 1.0
    assert all(np.array_equal(silent[k], synthetic[k]) for k in ("s2", "s1", "target", "clear"))
    with pytest.raises(ValueError, match="gate weight"):
        SyntheticClouds([as_clear_pair(triplet)], gate_weight=-1.0)


def _output(gate, reconstruction=None, restored=None):
    shape = gate.shape[:1] + (13,) + gate.shape[2:]
    restored = torch.zeros(shape) if restored is None else restored
    return NetworkOutput(restored=restored, gate=gate, kl=torch.zeros(()),
                         reconstruction=reconstruction)


def test_gate_term_rewards_the_right_gate_and_pushes_a_wrong_one_shut():
    clear = torch.zeros(1, 8, 8)
    clear[:, :, :4] = 1.0
    right = clear[:, None].clamp(0.02, 0.98)
    assert losses.gate_loss(right, clear) < losses.gate_loss(1 - right, clear)
    gate = torch.full((1, 1, 8, 8), 0.9, requires_grad=True)
    losses.gate_loss(gate, clear).backward()
    assert (gate.grad[..., 4:] > 0).all()   # descent lowers the gate under cloud
    assert (gate.grad[..., :4] < 0).all()   # and raises it on clear ground


def test_weighting_clear_pixels_moves_an_uncertain_gate_to_the_predicted_optimum():
    """A pixel that is clear in a quarter of the examples: the plain cross-entropy is lowest at
    gate 0.25; with clear pixels counted 3x, at odds 3 x (1/3) = 1, gate 0.5."""
    clear = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(4, 1, 1).expand(4, 4, 4).contiguous()
    levels = torch.linspace(0.01, 0.99, 99)

    def best(clear_weight):
        scores = [losses.gate_loss(torch.full((4, 1, 4, 4), float(g)), clear,
                                   clear_weight=clear_weight).item() for g in levels]
        return float(levels[int(np.argmin(scores))])

    assert best(1.0) == pytest.approx(0.25, abs=0.011)
    assert best(3.0) == pytest.approx(0.5, abs=0.011)
    # the per-pixel trust weight still applies on top: untrusted pixels count for nothing
    trust = torch.ones(4, 4, 4)
    trust[1:] = 0.0
    gate = torch.full((4, 1, 4, 4), 0.3)
    assert losses.gate_loss(gate, clear, trust, 3.0).item() == pytest.approx(
        -math.log(0.3), rel=1e-5)


def test_reconstruction_term_counts_cloud_errors_more_and_only_when_given():
    target = torch.zeros(1, 13, 16, 16)
    clear = torch.ones(1, 16, 16)
    clear[..., :8] = 0.0
    wrong_under_cloud = target.clone()
    wrong_under_cloud[..., :8] = 0.1
    wrong_on_clear = target.clone()
    wrong_on_clear[..., 8:] = 0.1
    assert (losses.reconstruction_loss(wrong_under_cloud, target, clear)
            > losses.reconstruction_loss(wrong_on_clear, target, clear))
    joint = losses.JointLoss()
    gate = torch.full((1, 1, 16, 16), 0.5)
    _, without = joint(_output(gate), target, target, 0)
    assert "gate" not in without and "reconstruction" not in without
    _, terms = joint(_output(gate, wrong_under_cloud), target, target, 0, clear)
    assert terms["gate"] > 0 and terms["reconstruction"] > 0


def test_configilm_pairs_are_read_without_flagged_ones_and_brought_towards_l1c(shared_data):
    folder = shared_data / "bigearthnet_configilm"
    got = pairs.read_bigearthnet_configilm(folder)
    flagged = pairs._configilm_flags(folder)
    assert len(flagged) == 6 and len(got) == 54 - 6
    assert not any(p.name.split("/")[-1] in flagged for p in got)
    pair = got[0]
    assert pair.s2.shape == (13, 120, 120) and pair.s1.shape == (2, 120, 120)
    # the darkest blue pixel of an L1C scene still shows the atmosphere's path reflectance
    assert pair.s2[1].min() >= pairs.L1C_PATH_REFLECTANCE[1] - 1e-6


def test_regions_of_real_triplets_follow_their_masks(packed):
    clear_scene = regions.triplet_regions(read_packed(packed, "316"))
    assert np.all(clear_scene == regions.CLEAR)
    cloudy = read_packed(packed, "2266")
    codes = regions.triplet_regions(cloudy)
    assert np.all(codes[cloudy.cloud_mask] != regions.CLEAR)
    assert (codes == regions.THICK).mean() > 0.5


def test_inner_clear_ground_keeps_exactly_the_clear_pixels_beyond_the_edge_distance():
    """A single cloud pixel removes a (2·d+1)² square of clear ground around it, clipped at the
    image edge, and nothing else; a scene without clear ground has none."""
    codes = np.full((20, 30), regions.CLEAR, np.uint8)
    codes[5, 25] = regions.THIN
    inner = regions.inner_clear(codes, distance=3)
    expected = np.ones_like(inner)
    expected[2:9, 22:29] = False
    assert np.array_equal(inner, expected)
    assert not regions.inner_clear(np.full((4, 4), regions.THICK, np.uint8)).any()


def test_selection_scenes_are_fixed_and_carry_exact_regions(packed):
    pair = as_clear_pair(read_packed(packed, "316"))
    first, again = simulated_triplets([pair], seed=4), simulated_triplets([pair], seed=4)
    assert len(first) == 3
    for a, b in zip(first, again):
        assert np.array_equal(a.cloudy, b.cloudy) and np.array_equal(a.regions, b.regions)
        assert np.array_equal(a.cloud_mask, a.regions != regions.CLEAR)
    assert first[0].cloud_mask.mean() < first[-1].cloud_mask.mean()
