"""Keeping the clear pixels of the cloudy date: for the user they are the observation itself.

Where the gate says clear sky (at or above KEEP_FULL) the engine writes the input pixel unchanged,
bit for bit; where it says cloud (at or below KEEP_NONE) it writes the network's restoration; in
between the two are mixed with a smoothstep weight, so the transition band has no visible edge.
The gate is a calibrated clear-sky confidence (trained against cloud masks), so these are
confidence levels, not tuning knobs: a pixel 90 % sure to be clear is kept.

The same function serves the engine (on DN, band by band) and training's validation (on the
[0, 1] scale), so the checkpoint is chosen on what users get.
"""
import numpy as np

KEEP_FULL = 0.9
KEEP_NONE = 0.8


def keep_weight(gate: np.ndarray) -> np.ndarray:
    """The input pixel's share of the output for a gate value: 1 at or above KEEP_FULL, 0 at or
    below KEEP_NONE, smoothstep in between. NaN (no data) gives 0."""
    t = np.clip((np.nan_to_num(gate, nan=0.0) - KEEP_NONE) / (KEEP_FULL - KEEP_NONE), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def keep_clear(restored: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """weight·original + (1 − weight)·restored per pixel (bands first), in `restored`'s dtype;
    exactly `original` where the weight is 1.

    For integer outputs the mix is rounded; `np.where` (rather than the arithmetic alone) makes
    the kept pixels bit-identical whatever the restored value there.
    """
    mixed = weight * original.astype(np.float32) + (1.0 - weight) * restored.astype(np.float32)
    dtype = np.dtype(restored.dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        mixed = np.clip(np.rint(mixed), info.min, info.max)
    return np.where(weight >= 1.0, original, mixed.astype(dtype))
