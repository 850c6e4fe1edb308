"""IB-HFN's joint loss (SPEC §5): reconstruction (L1), structure (SSIM), spectral fidelity (SAM),
contrastive sharpness and the bottleneck KL, balanced over training by a dynamic schedule; plus
the two terms that make the gate and the reconstruction mean what they say:

- "gate": binary cross-entropy of the gate against the clear-sky target of each pixel (1 = clear,
  0 = needs restoring), from the exact masks of simulated clouds or the real cloud masks. Without
  it nothing tells the gate to close, and it stays mostly open under thick cloud.
- "reconstruction": L1 of the reconstruction branch alone (the output with the optical path shut)
  against the target, weighted up under cloud. The blended output can hide a poor
  reconstruction behind a half-open gate; this term cannot be hidden from.

All images are N×C×H×W on the [0, 1] network scale. SSIM uses the metric's exact definition
(core/metrics.py: 11-px Gaussian window, σ 1.5, C1 = 0.01², C2 = 0.03², zero padding), so the
training signal is the number the evaluation reports. SAM is in radians here (the metric reports
degrees), which keeps it on the scale of the other terms.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.metrics import SSIM_C1, SSIM_C2, SSIM_SIGMA, SSIM_WINDOW, gaussian_window
from .network_io import NetworkOutput

# The hazy negative of the sharpness term: the target blurred well beyond the SSIM window's
# scale, so its edges are clearly softer than any acceptable restoration.
HAZE_SIGMA = 2.0
HAZE_WINDOW = 13
# Keeps the sharpness ratio defined on flat images (water), where all gradients vanish.
_SHARPNESS_EPS = 1e-3
# Spectra shorter than this have no direction; they score 90°, as in core.metrics.sam.
_NORM_EPS = 1e-12
# Keeps a batch of gate-only examples (all image weights 0) from dividing 0 by 0.
_WEIGHT_EPS = 1e-12


def _gaussian_blur(images: torch.Tensor, size: int, sigma: float, padding: str) -> torch.Tensor:
    """Filter every channel of N×C×H×W with a size×size Gaussian, keeping H×W; `padding` is
    "constant" (zeros, as the SSIM metric pads) or "reflect"."""
    kernel = torch.from_numpy(gaussian_window(size, sigma)).to(images)
    channels, radius = images.shape[1], size // 2
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    out = F.conv2d(F.pad(images, (0, 0, radius, radius), mode=padding), rows, groups=channels)
    return F.conv2d(F.pad(out, (radius, radius, 0, 0), mode=padding), cols, groups=channels)


def l1_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return l1_map(pred, target).mean()


def _weighted_mean(values: torch.Tensor, image_weight) -> torch.Tensor:
    """Mean of an N×… tensor with each image counted by its weight (an N vector; None: all 1).

    With every weight 1 this is the plain mean; images of weight 0 (gate-only examples) add
    nothing, and a batch of them alone gives 0 rather than 0/0.
    """
    if image_weight is None:
        return values.mean()
    weight = image_weight.to(values).reshape(-1)   # a batch of scalars may come as N×1
    per_image = values.reshape(values.shape[0], -1).mean(1)
    return (per_image * weight).sum() / weight.sum().clamp_min(_WEIGHT_EPS)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over batch, bands and pixels; 1 for identical images."""
    return ssim_map(pred, target).mean()


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of every band and pixel (N×C×H×W)."""
    def blur(x):
        return _gaussian_blur(x, SSIM_WINDOW, SSIM_SIGMA, "constant")

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p.square()
    var_t = blur(target * target) - mu_t.square()
    cov = blur(pred * target) - mu_p * mu_t
    return ((2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
            / ((mu_p.square() + mu_t.square() + SSIM_C1) * (var_p + var_t + SSIM_C2)))


def spectral_angle(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean angle between the band vectors of each pixel, in radians."""
    return spectral_angle_map(pred, target).mean()


def spectral_angle_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The angle between the band vectors at every pixel (N×H×W), in radians.

    Computed as 2·atan2(|p̂ − t̂|, |p̂ + t̂|) on unit vectors instead of acos(p̂·t̂): acos has an
    infinite derivative at identical spectra, which is exactly where a good restoration lives.
    """
    p = pred / torch.linalg.vector_norm(pred, dim=1, keepdim=True).clamp_min(_NORM_EPS)
    t = target / torch.linalg.vector_norm(target, dim=1, keepdim=True).clamp_min(_NORM_EPS)
    return 2.0 * torch.atan2(torch.linalg.vector_norm(p - t, dim=1),
                             torch.linalg.vector_norm(p + t, dim=1))


def _gradient_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: mean |∇a − ∇b| over both finite-difference directions (an N vector)."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return 0.5 * (dx.abs().flatten(1).mean(1) + dy.abs().flatten(1).mean(1))


def hazy_negative(target: torch.Tensor) -> torch.Tensor:
    """The target blurred: what a hazy, over-smoothed restoration would look like."""
    return _gaussian_blur(target, HAZE_WINDOW, HAZE_SIGMA, "reflect")


def contrastive_sharpness(pred: torch.Tensor, target: torch.Tensor,
                          cloudy: torch.Tensor) -> torch.Tensor:
    """The mean over images of `sharpness_per_image`."""
    return sharpness_per_image(pred, target, cloudy).mean()


def sharpness_per_image(pred: torch.Tensor, target: torch.Tensor,
                        cloudy: torch.Tensor) -> torch.Tensor:
    """How much nearer the output's gradients are to a hazy negative's than to the target's.

    Per image d⁺ = D(pred, target) and d⁻ = the mean D to the negatives (the blurred target and
    the cloudy input), with D the mean absolute difference of image gradients; the loss is
    d⁺ / (d⁺ + d⁻ + ε), in [0, 1]: 0 when the output has the target's edges, near 1 when it has
    a negative's. Where the cloudy input equals the target (clear sky) that negative adds the
    same to both sides and so pushes nowhere, and the bounded ratio cannot explode.
    """
    positive = _gradient_distance(pred, target)
    negative = 0.5 * (_gradient_distance(pred, hazy_negative(target))
                      + _gradient_distance(pred, cloudy))
    return positive / (positive + negative + _SHARPNESS_EPS)


def _ramp(step: int, start: int, length: int) -> float:
    """0 before `start`, then linearly up to 1 over `length` steps."""
    if length <= 0:
        return float(step >= start)
    return min(max((step - start) / length, 0.0), 1.0)


@dataclass(frozen=True)
class DynamicWeights:
    """The weight of each loss term at a training step.

    L1 carries the first `settle_steps` alone (with the KL warming up), since structure,
    spectral and sharpness terms only give useful directions once the output is roughly
    right; they then ramp in linearly over `ramp_steps`. The KL weight β ramps from 0 over
    `kl_warmup_steps`, so the bottleneck does not collapse before the decoder learns to use
    SAR features. Every weight is non-decreasing in the step.

    `gate_clear` is not a schedule: it is how much more the gate's error on a clear pixel counts
    than on a cloudy one. A clear pixel the gate calls cloud is repainted, which costs the user
    the one pixel they know to be true; a thin-cloud pixel the gate calls clear is kept with its
    haze. Above 1 it moves the cross-entropy's optimum for an uncertain pixel towards "keep"
    (the optimal gate's odds are `gate_clear` times the posterior odds of clear sky).
    """
    l1: float = 1.0
    ssim: float = 0.2
    sam: float = 0.1
    sharpness: float = 0.05
    kl: float = 0.01
    gate: float = 0.5
    reconstruction: float = 0.5
    kl_warmup_steps: int = 1000
    settle_steps: int = 300
    ramp_steps: int = 700
    gate_clear: float = 1.0

    def at(self, step: int) -> dict:
        structure = _ramp(step, self.settle_steps, self.ramp_steps)
        return {"l1": self.l1, "ssim": self.ssim * structure, "sam": self.sam * structure,
                "sharpness": self.sharpness * structure,
                "kl": self.kl * _ramp(step, 0, self.kl_warmup_steps),
                "gate": self.gate, "reconstruction": self.reconstruction}


# Under cloud the reconstruction is all the output has; its error there counts this much more.
CLOUD_RECONSTRUCTION_WEIGHT = 3.0
_PROBABILITY_EPS = 1e-6


def gate_loss(gate: torch.Tensor, clear: torch.Tensor,
              weight: torch.Tensor = None, clear_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of an N×1×H×W gate against the N×H×W clear-sky target in [0, 1];
    with an N×H×W `weight`, the weighted mean (pixels of weight 0, whose target is not trusted,
    count for nothing); a clear pixel's term counts `clear_weight` times a cloudy one's."""
    probability = gate[:, 0].clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
    if weight is None and clear_weight == 1.0:
        return F.binary_cross_entropy(probability, clear)
    weight = torch.ones_like(probability) if weight is None else weight.to(probability)
    if clear_weight != 1.0:
        weight = weight * (1.0 + (clear_weight - 1.0) * clear)
    return ((F.binary_cross_entropy(probability, clear, reduction="none") * weight).sum()
            / weight.sum().clamp_min(_WEIGHT_EPS))


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor,
                        clear: torch.Tensor, image_weight: torch.Tensor = None) -> torch.Tensor:
    """Mean L1 of the reconstruction, each pixel weighted 1 + CLOUD_RECONSTRUCTION_WEIGHT·cloud
    (and by its image's weight, when given)."""
    weight = 1.0 + CLOUD_RECONSTRUCTION_WEIGHT * (1.0 - clear)[:, None]
    if image_weight is not None:
        weight = weight * image_weight.to(weight).view(-1, 1, 1, 1)
    return ((reconstruction - target).abs() * weight).mean() / weight.mean().clamp_min(_WEIGHT_EPS)


class JointLoss(nn.Module):
    """total = Σ weight(step) · term; returns (total, {term: detached value}).

    The terms are the quantities minimised: "l1", "ssim" (= 1 − SSIM), "sam" (radians),
    "sharpness", "kl", and, when the clear-sky target `clear` (N×H×W, 1 = clear) is given,
    "gate" and "reconstruction" (the latter for networks that return one); `weights.at(step)`
    uses the same keys.

    `image_weight` (an N vector, default all 1) is how much each image counts in the image
    terms (all but "gate" and "kl"): 0 makes an example gate-only, for real clouds whose truth
    the network cannot know (training.optical_pairs). `gate_weight` (N×H×W, default all 1)
    weights the gate term per pixel, 0 where the clear-sky target is not trusted.
    """

    def __init__(self, weights: DynamicWeights = DynamicWeights()):
        super().__init__()
        self.weights = weights

    def forward(self, output: NetworkOutput, target: torch.Tensor, cloudy: torch.Tensor,
                step: int, clear: torch.Tensor = None, image_weight: torch.Tensor = None,
                gate_weight: torch.Tensor = None):
        restored, w = output.restored, image_weight
        terms = {"l1": _weighted_mean(l1_map(restored, target), w),
                 "ssim": 1.0 - _weighted_mean(ssim_map(restored, target), w),
                 "sam": _weighted_mean(spectral_angle_map(restored, target), w),
                 "sharpness": _weighted_mean(sharpness_per_image(restored, target, cloudy), w),
                 "kl": output.kl}
        if clear is not None:
            terms["gate"] = gate_loss(output.gate, clear, gate_weight, self.weights.gate_clear)
            if output.reconstruction is not None:
                terms["reconstruction"] = reconstruction_loss(output.reconstruction, target,
                                                              clear, w)
        weights = self.weights.at(step)
        total = sum(weights[name] * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}
