"""The SEN12MS-CR metrics against known values and an independent SciPy SSIM."""
import math

import numpy as np
import pytest
from scipy import ndimage

from sar_cloud_removal.core import metrics


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((13, 64, 64)), sigma=(0, 3, 3))
    return np.clip(smooth * 0.6 + 0.1, 0, 1)


def test_identical_images_are_perfect(image):
    assert metrics.psnr(image, image) == math.inf
    assert metrics.ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert metrics.mae(image, image) == 0.0
    assert metrics.sam(image, image) == pytest.approx(0.0, abs=1e-4)


def test_constant_offset_gives_expected_psnr_and_mae(image):
    shifted = image + 0.1
    assert metrics.mae(shifted, image) == pytest.approx(0.1)
    assert metrics.psnr(shifted, image) == pytest.approx(20.0)  # RMSE 0.1 -> 20 dB
    assert metrics.psnr(image + 0.01, image) == pytest.approx(40.0)


def test_ssim_matches_an_independent_scipy_computation(image):
    other = np.clip(image + np.random.default_rng(1).normal(0, 0.05, image.shape), 0, 1)

    def blur(x):  # 11-px window: radius int(truncate * sigma + 0.5) = 5, zero padding
        return ndimage.gaussian_filter(x, sigma=(0, 1.5, 1.5), truncate=5 / 1.5, mode="constant")

    mu_x, mu_y = blur(image), blur(other)
    sxx = blur(image ** 2) - mu_x ** 2
    syy = blur(other ** 2) - mu_y ** 2
    sxy = blur(image * other) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)
                / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))).mean()
    assert metrics.ssim(other, image) == pytest.approx(expected, rel=1e-10)
    assert metrics.ssim(other, image) < 0.99


def test_sam_of_orthogonal_spectra_is_ninety_degrees():
    a = np.zeros((13, 4, 4))
    b = np.zeros((13, 4, 4))
    a[0], b[1] = 0.5, 0.3
    assert metrics.sam(a, b) == pytest.approx(90.0)
    # a scaled spectrum keeps its angle: SAM ignores brightness
    assert metrics.sam(a * 0.5, a) == pytest.approx(0.0, abs=1e-4)


def test_cloud_only_metrics_score_the_masked_pixels_alone(image):
    mask = np.zeros(image.shape[1:], bool)
    mask[:, :32] = True
    damaged = image.copy()
    damaged[:, mask] += 0.2
    row = metrics.image_metrics(damaged, image, mask)
    assert row["cloud_mae"] == pytest.approx(0.2)
    assert row["mae"] == pytest.approx(0.1)
    assert row["cloud_psnr"] == pytest.approx(-20 * math.log10(0.2))
    assert math.isnan(metrics.mae(damaged, image, np.zeros_like(mask)))


def test_mean_over_images_skips_missing_and_infinite_values():
    rows = [{"psnr": 20.0, "cloud_mae": math.nan}, {"psnr": 30.0, "cloud_mae": 0.5},
            {"psnr": math.inf, "cloud_mae": 0.1}]
    means = metrics.mean_over_images(rows)
    assert means["psnr"] == 25.0
    assert means["cloud_mae"] == pytest.approx(0.3)


def test_gate_auc_is_rank_based_with_ties_counted_half():
    cloud = np.array([[1, 1, 0, 0]])
    assert metrics.gate_auc(np.array([[0.1, 0.2, 0.8, 0.9]]), cloud) == 1.0
    assert metrics.gate_auc(np.array([[0.9, 0.8, 0.2, 0.1]]), cloud) == 0.0
    assert metrics.gate_auc(np.full((1, 4), 0.5), cloud) == 0.5
    # clear {0.5, 0.9} vs cloudy {0.1, 0.5}: pairs 1 + 1 + 1 + one tie (0.5) -> 3.5 / 4
    assert metrics.gate_auc(np.array([[0.1, 0.5, 0.5, 0.9]]), cloud) == pytest.approx(0.875)
    assert math.isnan(metrics.gate_auc(np.ones((2, 2)), np.zeros((2, 2))))
