"""Image-quality metrics of the SEN12MS-CR protocol, in numpy alone.

Published cloud-removal numbers are per image on reflectance in [0, 1] over all 13 bands, then
averaged over images, with PSNR = 20·log10(1/RMSE), SSIM on an 11-px Gaussian window (σ 1.5,
C1 = 0.01², C2 = 0.03², zero padding as in the reference torch code) and SAM in degrees. Keeping
them here, free of torch, lets the evaluator, the benchmark and the tests score any backend's
output the same way. The cloud-only variants restrict each metric to the pixels of a cloud mask:
that is where a model earns its keep, since clear pixels can be copied from the input.
"""
import math

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# Metric names (as image_metrics and evaluate report them) where a larger value is better.
HIGHER_IS_BETTER = frozenset({"psnr", "ssim", "cloud_psnr", "cloud_ssim", "gate_auc"})
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def _as_pair(pred, target):
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"expected two C×H×W arrays of one shape, got {pred.shape} and {target.shape}")
    return pred, target


def _pixel_mask(mask, shape):
    """An H×W boolean selection; None selects every pixel."""
    if mask is None:
        return np.ones(shape[-2:], dtype=bool)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(shape[-2:]):
        raise ValueError(f"mask shape {mask.shape} does not match image {shape[-2:]}")
    return mask


def mae(pred, target, mask=None) -> float:
    """Mean absolute error over bands and the selected pixels (NaN when none is selected)."""
    pred, target = _as_pair(pred, target)
    sel = _pixel_mask(mask, pred.shape)
    if not sel.any():
        return math.nan
    return float(np.abs(pred - target)[:, sel].mean())


def psnr(pred, target, mask=None) -> float:
    """20·log10(1/RMSE) for a peak of 1; infinite for identical images."""
    pred, target = _as_pair(pred, target)
    sel = _pixel_mask(mask, pred.shape)
    if not sel.any():
        return math.nan
    mse = float(((pred - target)[:, sel] ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def sam(pred, target, mask=None) -> float:
    """Mean spectral angle between the pixels' band vectors, in degrees."""
    pred, target = _as_pair(pred, target)
    sel = _pixel_mask(mask, pred.shape)
    if not sel.any():
        return math.nan
    p, t = pred[:, sel], target[:, sel]
    norms = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    # an all-zero spectrum has no direction: it scores 90° instead of dividing by zero (an
    # additive epsilon would instead bias every angle near zero by about 0.01°)
    cos = (p * t).sum(0) / np.where(norms > 0, norms, 1.0)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian the SSIM window is the outer product of."""
    x = np.arange(size) - size // 2
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _blur(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'same' filtering of C×H×W with zero padding (torch conv2d with padding=k//2)."""
    r = len(kernel) // 2
    h, w = images.shape[-2:]
    padded = np.pad(images, ((0, 0), (r, r), (0, 0)))
    rows = sum(k * padded[:, i:i + h, :] for i, k in enumerate(kernel))
    padded = np.pad(rows, ((0, 0), (0, 0), (r, r)))
    return sum(k * padded[:, :, i:i + w] for i, k in enumerate(kernel))


def ssim_map(pred, target) -> np.ndarray:
    """Per-band, per-pixel SSIM (C×H×W); the image SSIM is its mean."""
    pred, target = _as_pair(pred, target)
    k = gaussian_window()
    mu_p, mu_t = _blur(pred, k), _blur(target, k)
    var_p = _blur(pred * pred, k) - mu_p ** 2
    var_t = _blur(target * target, k) - mu_t ** 2
    cov = _blur(pred * target, k) - mu_p * mu_t
    return ((2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
            / ((mu_p ** 2 + mu_t ** 2 + SSIM_C1) * (var_p + var_t + SSIM_C2)))


def ssim(pred, target, mask=None) -> float:
    """Mean SSIM over bands and the selected pixels (windows still see their neighbours)."""
    values = ssim_map(pred, target)
    sel = _pixel_mask(mask, values.shape)
    if not sel.any():
        return math.nan
    return float(values[:, sel].mean())


def image_metrics(pred, target, cloud_mask=None) -> dict:
    """PSNR, SSIM, MAE, SAM of one image, plus cloud-only variants when a mask is given."""
    row = {"psnr": psnr(pred, target), "ssim": ssim(pred, target),
           "mae": mae(pred, target), "sam": sam(pred, target)}
    if cloud_mask is not None:
        row.update({"cloud_psnr": psnr(pred, target, cloud_mask),
                    "cloud_ssim": ssim(pred, target, cloud_mask),
                    "cloud_mae": mae(pred, target, cloud_mask),
                    "cloud_sam": sam(pred, target, cloud_mask)})
    return row


def mean_over_images(rows) -> dict:
    """Average every numeric key over the images that have a finite value for it.

    Skipping NaN follows the reference evaluator (an image without cloud has no cloud-only
    score); infinite PSNR (a perfect copy) would swamp the mean, so it is skipped too.
    """
    keys = []
    for row in rows:
        keys += [k for k, v in row.items() if isinstance(v, (int, float)) and k not in keys]
    means = {}
    for key in keys:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        finite = [v for v in values if math.isfinite(v)]
        means[key] = float(np.mean(finite)) if finite else math.nan
    return means


def gate_auc(gate, cloud_mask) -> float:
    """Area under the ROC curve of the gate as a clear-sky detector against a cloud mask.

    The gate says 1 = clear, so the AUC is the chance that a random clear pixel gets a higher
    gate than a random cloudy one (ties count half): 1 separates perfectly, 0.5 is chance. Rank
    based (Mann–Whitney U), so it needs no threshold and no sklearn. NaN when the mask holds only
    one class.
    """
    scores = np.asarray(gate, dtype=np.float64).ravel()
    clear = ~np.asarray(cloud_mask).astype(bool).ravel()
    if scores.shape != clear.shape:
        raise ValueError(f"gate has {scores.size} pixels but the mask has {clear.size}")
    n_pos, n_neg = int(clear.sum()), int((~clear).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct value, so tied scores share their mean rank
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    u = ranks[clear].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
