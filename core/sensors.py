"""Sentinel-1 and Sentinel-2 values <-> the [0, 1] scale the networks were trained on.

The conventions follow the SEN12MS-CR protocol (SPEC §4). Two things users get wrong without
noticing are detected here from the data itself, because a silently mis-scaled input gives a
plausible-looking but wrong image: the +1000 DN offset of L1C products made with processing
baseline >= 04.00, and S1 delivered as linear power instead of dB.
"""
import numpy as np

from .errors import UserError

S2_SCALE = 10000
BASELINE_04_OFFSET = 1000
S1_DB_RANGE = (-25.0, 0.0)

# With the +1000 offset even the darkest valid pixels (cirrus band B10 over clear sky sits at a
# few DN) read >= 1000. Sensor noise can push a handful of them just below, hence a low
# percentile rather than the minimum.
_OFFSET_PERCENTILE = 1.0
# Linear power is non-negative and mostly below 1; dB backscatter is mostly negative.
_MAX_NEGATIVE_FRACTION_FOR_LINEAR = 0.01
_LINEAR_MEDIAN_CEILING = 1.0
# log10 of zero power is -inf; anything below -25 dB is clipped anyway.
_MIN_LINEAR_POWER = 1e-10


def detect_s2_offset(sample: np.ndarray, valid: np.ndarray) -> int:
    """Return the DN offset (0 or 1000) that an L1C image carries, judged from its valid pixels.

    `sample` is (bands, ...pixels) and `valid` the matching (...pixels) mask; a sample of the
    image is enough. Without an offset, B10 and dark surfaces reach a few DN; with it, nothing valid goes
    (much) below 1000. An image with no valid pixels is given offset 0.
    """
    values = sample[:, valid]
    if values.size == 0:
        return 0
    low = np.percentile(values, _OFFSET_PERCENTILE)
    return BASELINE_04_OFFSET if low >= BASELINE_04_OFFSET else 0


def offset_from_metadata(tags: dict):
    """The offset implied by a PROCESSING_BASELINE tag (kept by GDAL conversions of the SAFE
    product), or None when the image does not say. Metadata beats the pixel statistics, which a
    scene under thick cloud can fool."""
    for key, value in tags.items():
        if key.upper().endswith("PROCESSING_BASELINE"):
            try:
                return BASELINE_04_OFFSET if float(value) >= 4.0 else 0
            except ValueError:
                return None
    return None


def resolve_s2_offset(setting, sample: np.ndarray, valid: np.ndarray, tags: dict = None):
    """Turn the user's offset setting ("auto" or an integer) into (offset, note for the user).

    With "auto", the image's processing-baseline metadata decides when it has some, else its
    pixel values (`detect_s2_offset`).
    """
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        from_metadata = offset_from_metadata(tags or {})
        if from_metadata is not None:
            return from_metadata, (f"Subtracted the S2 DN offset of {from_metadata} that the "
                                   f"image's processing-baseline metadata implies.")
        offset = detect_s2_offset(sample, valid)
        if offset:
            return offset, (f"Detected the +{offset} DN offset of Sentinel-2 processing baseline "
                            "04.00 or later and subtracted it (set the offset to 0 to override).")
        return 0, "No Sentinel-2 DN offset detected (processing baseline before 04.00)."
    try:
        offset = int(setting)
    except (TypeError, ValueError):
        raise UserError(f"The S2 offset must be 'auto' or a whole number of DN, not {setting!r}.")
    if offset < 0:
        raise UserError(f"The S2 offset must not be negative (got {offset}).")
    return offset, f"Subtracted the requested S2 DN offset of {offset}."


def normalise_s2(dn: np.ndarray, offset: int, scale: float = S2_SCALE) -> np.ndarray:
    """DN -> network scale: (DN - offset) clipped to [0, scale], divided by scale, float32."""
    values = dn.astype(np.float32)   # in place from here on: this runs on every tile
    values -= np.float32(offset)
    np.clip(values, np.float32(0), np.float32(scale), out=values)
    values /= np.float32(scale)
    return values


def denormalise_s2(values: np.ndarray, offset: int, dtype, scale: float = S2_SCALE) -> np.ndarray:
    """Network scale -> DN in the S2 input's dtype, the inverse of `normalise_s2`.

    Integer outputs are rounded to the nearest DN and clipped to the dtype's range, so values
    that went through the network unchanged come back bit for bit; float outputs keep their
    fractions, as a float input has them.
    """
    dtype = np.dtype(dtype)
    # float32 resolves DN to 0.002 or better below 16384, ample for rounding; float64 only when
    # the output is float64.
    work = np.float64 if dtype == np.float64 else np.float32
    dn = values.astype(work) * work(scale) + work(offset)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(dn), info.min, info.max).astype(dtype)
    return dn.astype(dtype)


def is_linear_power(sample: np.ndarray) -> bool:
    """Whether an S1 sample (any shape; NaN and inf are ignored) is linear power rather than dB."""
    values = sample[np.isfinite(sample)]
    if values.size == 0:
        return False
    negative_fraction = np.count_nonzero(values < 0) / values.size
    return (negative_fraction <= _MAX_NEGATIVE_FRACTION_FOR_LINEAR
            and float(np.median(values)) < _LINEAR_MEDIAN_CEILING)


def normalise_s1(values: np.ndarray, linear: bool, db_range=S1_DB_RANGE) -> np.ndarray:
    """S1 backscatter -> network scale: dB clipped to `db_range` and mapped onto [0, 1], float32.

    NaN stays NaN so the caller can still see which pixels were missing.
    """
    values = values.astype(np.float32)
    if linear:
        np.maximum(values, np.float32(_MIN_LINEAR_POWER), out=values)   # NaN propagates
        np.log10(values, out=values)
        values *= np.float32(10)
    low, high = (np.float32(v) for v in db_range)
    np.clip(values, low, high, out=values)
    values -= low
    values /= high - low
    return values
