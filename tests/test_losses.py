"""The joint loss: each term against known values and an independent SSIM, gradients that stay
finite where a naive formula breaks (identical spectra, zero spectra), and the schedule."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from sar_cloud_removal.core import metrics
from sar_cloud_removal.models.losses import (DynamicWeights, JointLoss, contrastive_sharpness,
                                             hazy_negative, l1_loss, spectral_angle, ssim)
from sar_cloud_removal.models.network_io import NetworkOutput


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two C×H×W images written from the definition with scipy: 11×11 Gaussian window
    (σ 1.5) applied per band with zero padding, C1 = 0.01², C2 = 0.03², mean of the map."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def mean(image):
        return np.stack([ndimage.correlate(band, window, mode="constant", cval=0.0)
                         for band in image])

    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = mean(a), mean(b)
    sigma_a, sigma_b = mean(a * a) - mu_a ** 2, mean(b * b) - mu_b ** 2
    sigma_ab = mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return float(np.mean((2 * mu_a * mu_b + c1) * (2 * sigma_ab + c2)
                         / ((mu_a ** 2 + mu_b ** 2 + c1) * (sigma_a + sigma_b + c2))))


@pytest.fixture(scope="module")
def patches(real_triplet):
    """64×64 crops of the real triplet as 1×C×H×W tensors: target, cloudy input."""
    crop = (slice(None), slice(96, 160), slice(96, 160))
    return (torch.from_numpy(real_triplet.target[crop][None].copy()),
            torch.from_numpy(real_triplet.cloudy[crop][None].copy()))


def test_identical_images_score_perfectly(patches):
    target, _ = patches
    assert l1_loss(target, target).item() == 0.0
    assert ssim(target, target).item() == pytest.approx(1.0, abs=1e-6)
    assert spectral_angle(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive_sharpness(target, target, target).item() == 0.0


def test_ssim_matches_an_independent_implementation_and_the_metric(patches):
    target, cloudy = patches
    expected = reference_ssim(cloudy[0].numpy(), target[0].numpy())
    assert expected < 0.95                       # a pair that really differs
    assert ssim(cloudy, target).item() == pytest.approx(expected, abs=1e-5)
    assert ssim(cloudy, target).item() == pytest.approx(
        metrics.ssim(cloudy[0].numpy(), target[0].numpy()), abs=1e-5)


def test_a_one_pixel_shift_lowers_ssim(patches):
    target, _ = patches
    shifted = torch.roll(target, shifts=1, dims=-1)
    assert ssim(shifted, target).item() < 0.99


def test_l1_is_the_mean_absolute_difference():
    a = torch.zeros(1, 13, 4, 4)
    assert l1_loss(a + 0.25, a).item() == pytest.approx(0.25)


@pytest.mark.parametrize("pred, target, angle", [
    ([1.0, 0.0], [0.0, 1.0], math.pi / 2),
    ([1.0, 1.0], [1.0, 0.0], math.pi / 4),
    ([2.0, 2.0], [1.0, 1.0], 0.0),              # brightness alone is no spectral error
    ([0.0, 0.0], [1.0, 0.0], math.pi / 2),      # a zero spectrum has no direction
])
def test_spectral_angle_of_known_vectors_in_radians(pred, target, angle):
    p = torch.tensor(pred).view(1, 2, 1, 1)
    t = torch.tensor(target).view(1, 2, 1, 1)
    assert spectral_angle(p, t).item() == pytest.approx(angle, abs=1e-6)


def test_spectral_angle_agrees_with_the_metric_in_degrees(patches):
    target, cloudy = patches
    assert math.degrees(spectral_angle(cloudy, target).item()) == pytest.approx(
        metrics.sam(cloudy[0].numpy(), target[0].numpy()), rel=1e-4)


@pytest.mark.parametrize("term", [l1_loss, ssim, spectral_angle])
def test_gradients_are_finite_even_at_identical_and_zero_spectra(term, patches):
    target, _ = patches
    target = target.clone()
    target[..., :4, :4] = 0.0                     # nodata-like zero spectra
    for start in (target, target + 0.01 * torch.rand_like(target)):
        pred = start.clone().requires_grad_(True)
        term(pred, target).backward()
        assert torch.isfinite(pred.grad).all()


def test_sharpness_prefers_the_target_edges_to_a_hazy_output(patches):
    target, cloudy = patches
    sharp = contrastive_sharpness(target, target, cloudy).item()
    hazy = contrastive_sharpness(hazy_negative(target), target, cloudy).item()
    assert sharp == 0.0 and 0.5 < hazy <= 1.0
    pred = hazy_negative(target).requires_grad_(True)
    contrastive_sharpness(pred, target, cloudy).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_schedule_warms_kl_and_brings_structure_in_after_l1_settles():
    schedule = DynamicWeights(kl=0.01, kl_warmup_steps=100, settle_steps=50, ramp_steps=100)
    steps = range(0, 300, 5)
    weights = [schedule.at(step) for step in steps]
    for name in ("l1", "ssim", "sam", "sharpness", "kl"):
        series = [w[name] for w in weights]
        assert series == sorted(series), name                     # never decreases
    assert schedule.at(0)["kl"] == 0.0
    assert schedule.at(50)["ssim"] == schedule.at(50)["sharpness"] == 0.0
    assert schedule.at(100)["ssim"] == pytest.approx(schedule.ssim / 2)
    assert schedule.at(150) == {"l1": 1.0, "ssim": schedule.ssim, "sam": schedule.sam,
                                "sharpness": schedule.sharpness, "kl": 0.01,
                                "gate": schedule.gate, "reconstruction": schedule.reconstruction}


def test_joint_loss_is_the_weighted_sum_of_its_terms(patches):
    target, cloudy = patches
    schedule = DynamicWeights()
    output = NetworkOutput(restored=cloudy.clone().requires_grad_(True),
                           gate=torch.ones_like(cloudy[:, :1]), kl=torch.tensor(0.3))
    step = schedule.settle_steps + schedule.ramp_steps // 2
    total, terms = JointLoss(schedule)(output, target, cloudy, step)
    assert set(terms) == {"l1", "ssim", "sam", "sharpness", "kl"}
    assert terms["ssim"].item() == pytest.approx(1.0 - ssim(cloudy, target).item(), abs=1e-6)
    weights = schedule.at(step)
    assert total.item() == pytest.approx(sum(weights[k] * terms[k].item() for k in terms),
                                         rel=1e-6)
    total.backward()
    assert torch.isfinite(output.restored.grad).all()
