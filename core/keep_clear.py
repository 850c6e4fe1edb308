"""Keeping the clear pixels of the cloudy date: for the user they are the observation itself.

Where the gate says clear sky (at or above KEEP_FULL) the engine writes the input pixel unchanged,
bit for bit; where it says cloud (at or below KEEP_NONE) it writes the network's restoration; in
between the two are mixed with a smoothstep weight, so the transition band has no visible edge.
The gate is a clear-sky detector trained against cloud masks, and each model's gate has its own
confidence scale: a model's spec may carry its own levels (`keep_clear` in core.model_spec,
chosen on the selection scenes so that as large a share of their clear pixels is kept, as
purely, as these defaults kept for the models they were chosen on; docs/EVALUATION.md); these
are the defaults.

The same function serves the engine (on DN, band by band) and training's validation (on the
[0, 1] scale), so the checkpoint is chosen on what users get.
"""
import numpy as np

KEEP_FULL = 0.9
KEEP_NONE = 0.8


def keep_weight(gate: np.ndarray, none: float = KEEP_NONE, full: float = KEEP_FULL) -> np.ndarray:
    """The input pixel's share of the output for a gate value: 1 at or above `full`, 0 at or
    below `none`, smoothstep in between. NaN (no data) gives 0."""
    t = np.clip((np.nan_to_num(gate, nan=0.0) - none) / (full - none), 0.0, 1.0)
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
