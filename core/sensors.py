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
# Without cloud, the darkest 1 % of an L1C scene (B10, water vapour absorbs there) lies at a few
# tens of DN of reflectance: 1005-1053 on the real offset tiles here, 2-60 on offset-free ones.
# A scene whose darkest pixels are brighter than this is under cloud (or cirrus) everywhere, and
# then an offset-free scene (2 of 30 real 2018 dates here, darkest at 1790 and 2338 DN) looks
# just like an offset one: the pixels cannot tell, so the engine asks for the setting.
_CLEAR_DARKEST_MAX = 200
# Linear power is non-negative and mostly below 1; dB backscatter is mostly negative.
_MAX_NEGATIVE_FRACTION_FOR_LINEAR = 0.01
_LINEAR_MEDIAN_CEILING = 1.0
# log10 of zero power is -inf; anything below -25 dB is clipped anyway.
_MIN_LINEAR_POWER = 1e-10
OFFSET_SETTING_HINT = ("set the S2 offset to 1000 for a product processed with baseline 04.00 "
                       "or later (sensed or reprocessed after 25 January 2022) or to 0 for an "
                       "older one (CLI --s2-offset, the dock's and Processing's S2 offset)")


def invalid_s2_pixels(values: np.ndarray, nodata, dtype=None) -> np.ndarray:
    """S2 pixels (rows x cols) that hold no observation: the one definition used both to sample
    the image (offset detection, empty-input check) and to mask it in the output.

    A pixel is invalid when any band is NaN or equals the nodata value. An integer image
    (`dtype`, default the array's) without a nodata value follows the L1C convention that DN 0
    is NO_DATA: exports that dropped the tag keep zero-filled swath edges, which must not be
    restored as black land.
    """
    kind = np.dtype(dtype or values.dtype).kind
    invalid = np.zeros(values.shape[1:], bool)
    if values.dtype.kind == "f":
        invalid |= ~np.isfinite(values).all(axis=0)
    if nodata is None:
        if kind in "iu":
            invalid |= (values == 0).all(axis=0)
    elif not np.isnan(nodata):
        invalid |= (values == nodata).any(axis=0)
    return invalid


def invalid_s1_pixels(values: np.ndarray, nodata) -> np.ndarray:
    """S1 pixels (rows x cols) without backscatter: NaN or the nodata value in any band, and,
    in an image without a nodata value, every band exactly 0.

    GRD products fill the area outside the swath with zeros. Real backscatter is never exactly
    zero in both polarisations (0 linear power is -inf dB; 0 dB is the clip ceiling of some
    datasets, reached by single bright pixels in VV only).
    """
    invalid = np.zeros(values.shape[1:], bool)
    if values.dtype.kind == "f":
        invalid |= ~np.isfinite(values).all(axis=0)
    if nodata is None:
        invalid |= (values == 0).all(axis=0)
    elif not np.isnan(nodata):
        invalid |= (values == nodata).any(axis=0)
    return invalid


def detect_s2_offset(sample: np.ndarray, valid: np.ndarray):
    """The DN offset (0 or 1000) an L1C image carries, judged from its valid pixels, or None
    when the pixels cannot tell (cloud everywhere).

    `sample` is (bands, ...pixels) and `valid` the matching (...pixels) mask; a sample of the
    image is enough. Without an offset, B10 and dark surfaces reach a few DN; with it, nothing
    valid goes (much) below 1000, and over clear sky something stays close to it. An image with
    no valid pixels is given offset 0.
    """
    low = darkest_dn(sample, valid)
    if low is None or low < BASELINE_04_OFFSET:
        return 0
    return BASELINE_04_OFFSET if low < BASELINE_04_OFFSET + _CLEAR_DARKEST_MAX else None


def darkest_dn(sample: np.ndarray, valid: np.ndarray):
    """The 1st percentile of the valid DN of all bands (None without valid pixels)."""
    values = sample[:, valid]
    if values.size == 0:
        return None
    return float(np.percentile(values, _OFFSET_PERCENTILE))


def offset_from_metadata(tags: dict):
    """(offset, reason) from the image's metadata, or None when it does not say.

    In order: a RADIO_ADD_OFFSET (the L1C product metadata, -1000 from baseline 04.00 on; also
    set to 0 for Earth Engine's harmonized collection, whose offset is already removed), then a
    PROCESSING_BASELINE (kept by GDAL conversions of the SAFE product and by Earth Engine's
    product properties). Metadata beats the pixel statistics, which a scene under thick cloud
    fools.
    """
    upper = {key.upper(): str(value).strip() for key, value in tags.items()}
    source = tags.get("S2_METADATA_SOURCE", "the image's metadata")
    for key, value in upper.items():
        if key.endswith("RADIO_ADD_OFFSET"):
            try:
                offset = -int(round(float(value)))
            except ValueError:
                break
            if offset >= 0:
                return offset, f"RADIO_ADD_OFFSET {value} in {source}"
    for key, value in upper.items():
        if key.endswith("PROCESSING_BASELINE"):
            try:
                baseline = float(value)
            except ValueError:
                return None
            return (BASELINE_04_OFFSET if baseline >= 4.0 else 0,
                    f"processing baseline {value} in {source}")
    return None


def resolve_s2_offset(setting, sample: np.ndarray, valid: np.ndarray, tags: dict = None,
                      name: str = "S2 image"):
    """Turn the user's offset setting ("auto" or an integer) into (offset, note for the user).

    With "auto", the image's metadata decides when it has some, else its valid pixels
    (`detect_s2_offset`); when those are too bright to tell, a UserError asks for the setting.
    """
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        from_metadata = offset_from_metadata(tags or {})
        if from_metadata is not None:
            offset, reason = from_metadata
            return offset, f"S2 DN offset {offset} subtracted, from the {reason}."
        offset = detect_s2_offset(sample, valid)
        low = darkest_dn(sample, valid)
        if offset is None:
            raise UserError(
                f"Cannot tell whether the S2 image {name} carries the +1000 DN offset: it has "
                f"no processing-baseline metadata and even its darkest pixels are bright "
                f"({low:.0f} DN, cloud?); {OFFSET_SETTING_HINT}.")
        if offset:
            return offset, (f"S2 DN offset {offset} subtracted, detected from the pixels (no "
                            f"metadata; the darkest 1 % of valid pixels lie at {low:.0f} DN, "
                            f"just above 1000: the +1000 offset of processing baseline 04.00 or "
                            f"later); set the offset to 0 to override.")
        where = "no valid pixels" if low is None else f"the darkest valid pixels at {low:.0f} DN"
        return 0, (f"No S2 DN offset subtracted, judged from the pixels (no metadata; {where}: "
                   f"processing baseline before 04.00); set the offset to 1000 to override.")
    try:
        offset = int(setting)
    except (TypeError, ValueError):
        raise UserError(f"The S2 offset must be 'auto' or a whole number of DN, not {setting!r}.")
    if offset < 0:
        raise UserError(f"The S2 offset must not be negative (got {offset}).")
    return offset, f"S2 DN offset {offset} subtracted, as set."


def _text_of(dataset) -> str:
    """Band descriptions and metadata values of a dataset, upper case, for naming checks."""
    parts = [d or "" for d in dataset.descriptions]
    try:
        parts += [f"{key}={value}" for key, value in dataset.tags().items()]
    except Exception:   # noqa: BLE001 (a driver without metadata support)
        pass
    return " ".join(parts).upper()


def check_s2_bands(dataset, band_names) -> None:
    """Refuse S2 images the network cannot take, saying why: L2A (surface reflectance) images,
    which have 12 bands (no B10), and other band counts."""
    count, expected = dataset.count, len(band_names)
    text = _text_of(dataset)
    l2a = ("MSIL2A" in text or "LEVEL-2A" in text or "S2MSI2A" in text
           or any(name in (d or "").upper() for d in dataset.descriptions
                  for name in ("AOT", "WVP", "SCL")))
    if l2a or (expected == 13 and count == 12):
        what = ("is a Level-2A (surface reflectance) image" if l2a else
                "has 12 bands, as a Level-2A (surface reflectance) image has (no B10)")
        raise UserError(f"The S2 image {dataset.name} {what}, but the network needs Level-1C "
                        f"(13 bands B1 … B12 with B8A and B10, top-of-atmosphere): download the "
                        f"Level-1C product of the same date (S2MSI1C, from the Copernicus "
                        f"Data Space Ecosystem, dataspace.copernicus.eu) and give its .SAFE "
                        f"folder, .zip or band files.")
    if count != expected:
        plural = "" if count == 1 else "s"
        raise UserError(f"The S2 image {dataset.name} has {count} band{plural} but {expected} "
                        f"are needed ({', '.join(band_names)}); give a 13-band L1C image or the "
                        f"L1C product (.SAFE folder, .zip or a folder of band files).")


def check_s1_bands(dataset, band_names) -> None:
    """Refuse S1 images that are not dual-polarisation VV + VH, saying what they are."""
    count, expected = dataset.count, len(band_names)
    descriptions = [(d or "").upper() for d in dataset.descriptions]
    text = _text_of(dataset)
    cross = [pol for pol in ("HH", "HV") if any(pol in d for d in descriptions)
             or f"POLARISATION={pol}" in text or f"POLARIZATION={pol}" in text]
    advice = ("the network needs dual-polarisation VV + VH (an IW or EW GRD product of type "
              "1SDV, from the Copernicus Data Space Ecosystem, dataspace.copernicus.eu); "
              "give a 2-band VV, VH image")
    if cross:
        raise UserError(f"The S1 image {dataset.name} holds {'/'.join(cross)} polarisation "
                        f"(polar or EW-mode acquisitions), but {advice}.")
    if count == 1:
        pol = "VH" if "VH" in text else "VV"
        raise UserError(f"The S1 image {dataset.name} has one band (single polarisation, "
                        f"{pol} only?), but {advice}.")
    if count != expected:
        raise UserError(f"The S1 image {dataset.name} has {count} bands but {expected} are "
                        f"needed ({', '.join(band_names)}); {advice}.")


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
