"""The per-scene ridge baseline of the adaptation ablation: no network, no training data.

From multi-scale S1 statistics (VV, VH, VV − VH and their local means over 5, 15 and 45 px) a
ridge regression to the 13 bands is fitted on the scene's own clear pixels, then predicts every
pixel. It measures how much of the scene's SAR-to-optical relation a linear map on its own clear
pixels already captures; an adapted network has to do better than this to be worth its cost.
"""
import numpy as np

WINDOWS = (5, 15, 45)
RIDGE = 1e-3
MAX_FIT_PIXELS = 200_000


def box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size×size window (edges: the window shrinks to the image), via summed areas."""
    radius = size // 2
    padded = np.pad(image.astype(np.float64), ((1, 0), (1, 0)))
    area = padded.cumsum(0).cumsum(1)
    h, w = image.shape
    r0 = np.clip(np.arange(h) - radius, 0, h)
    r1 = np.clip(np.arange(h) + radius + 1, 0, h)
    c0 = np.clip(np.arange(w) - radius, 0, w)
    c1 = np.clip(np.arange(w) + radius + 1, 0, w)
    total = (area[r1][:, c1] - area[r0][:, c1] - area[r1][:, c0] + area[r0][:, c0])
    count = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return (total / count).astype(np.float32)


def sar_features(s1: np.ndarray) -> np.ndarray:
    """F×H×W features of a 2×H×W S1 image on the network scale, with a constant term."""
    base = [s1[0], s1[1], s1[0] - s1[1]]
    features = base + [box_mean(b, size) for size in WINDOWS for b in base]
    return np.stack(features + [np.ones_like(s1[0])])


def ridge_restore(s2: np.ndarray, s1: np.ndarray, clear: np.ndarray, seed: int = 0):
    """13×H×W prediction of a ridge fit from S1 features to S2 on the `clear` pixels, or None
    when there are fewer clear pixels than features."""
    features = sar_features(s1)
    x = features.reshape(len(features), -1).T
    y = s2.reshape(len(s2), -1).T
    rows = np.flatnonzero(clear.ravel())
    if len(rows) < len(features):
        return None
    if len(rows) > MAX_FIT_PIXELS:
        rows = np.random.default_rng(seed).choice(rows, MAX_FIT_PIXELS, replace=False)
    a, b = x[rows].astype(np.float64), y[rows].astype(np.float64)
    weights = np.linalg.solve(a.T @ a + RIDGE * len(rows) * np.eye(a.shape[1]), a.T @ b)
    return (x @ weights).T.reshape(s2.shape).astype(np.float32)
