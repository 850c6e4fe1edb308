"""Real cloudy/clear Sentinel-2 pairs that have no Sentinel-1: more real clouds for the gate.

The shared data holds only a handful of complete SEN12MS-CR triplets with real clouds, but two
S2-only groups show many more real clouds over other scenes and seasons:

- `sen12mscr_partial/s2_pairs_no_s1/{s2,s2_cloudy}`: 13 SEN12MS-CR cloud-free/cloudy pairs of the
  same name, 11 scenes in all four seasons, thin to thick cloud (and a few clear on both dates);
- `sen12mscrts_s2_timeseries`: one SEN12MS-CR-TS patch at 30 dates of 2018. A date is taken as
  clear when fewer than `CLEAR_DATE_FRACTION` of its pixels depart from the per-pixel median of
  all dates the way cloud or shadow does (regions.derived_cloud_mask against the median); every
  partly clouded date is paired with the nearest clear date, which is what SEN12MS-CR's own
  cloud-free reference is too (a different date, close in time). Fully clouded dates (more than
  `MAX_SERIES_CLOUD` cloud) are left out: simulated thick cloud already shows the gate plenty of
  those, and 8 of them would make this one scene a third of the group.

Without S1 these pairs cannot teach the restoration: under thick cloud the truth is unknowable
from the optical image alone, and a zero SAR input would teach the network to ignore SAR. The
gate, though, is computed from the optical encoder alone and (with detached gates) learns from
its mask term only, so a cloud it sees here is as good as one in a triplet. These pairs are
therefore gate-only examples: the dataset gives them an image weight of 0 (models.losses) and
the S1 input is a constant the gate never looks at.

Their gate target comes from the pair, but two dates differ through the ground too (harvest,
snow, a season apart), so only what the pair shows plainly is taught: cloud where the cloudy date
is brighter in the visible bands by at least `CLOUD_EXCESS`, clear where the two dates agree
within `CLEAR_AGREEMENT`; every other pixel (darker on the cloudy date: shadow or changed
ground; a little brighter: thin haze or change) gets gate weight 0. A pair whose reference is
bright throughout (pairs.is_clear_image: snow or cloud on the "clear" date) is left out, and
so are the series' dates from November to March, when snow comes and goes between dates.

None of these scenes is a report or selection scene of docs/EVALUATION.md (spring 140, summer 73
and 119, winter 112).
"""
import re
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from .pairs import is_clear_image
from .regions import derived_cloud_mask, visible_excess
from .triplet import Triplet, scale_s2_dn

PAIRS_FOLDER = Path("sen12mscr_partial") / "s2_pairs_no_s1"
SERIES_FOLDER = Path("sen12mscrts_s2_timeseries")
# A date with fewer cloud- or shadow-like pixels than this (against the median of all dates)
# counts as clear, as the dates the series' source calls clear do (at most 4 % here).
CLEAR_DATE_FRACTION = 0.05
MAX_SERIES_CLOUD = 0.95
SNOW_MONTHS = (11, 12, 1, 2, 3)
CLOUD_EXCESS = 0.06
CLEAR_AGREEMENT = 0.015
_DATE = re.compile(r"ImgNo_(\d+)_(\d{4}-\d{2}-\d{2})")


def _read_s2(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            return scale_s2_dn(dataset.read())


def _gate_only(name: str, cloudy: np.ndarray, clear: np.ndarray) -> Triplet:
    """A gate-only example: confident cloud and clear pixels labelled, the rest weight 0."""
    excess = visible_excess(cloudy, clear)
    cloud = excess >= CLOUD_EXCESS
    trusted = cloud | (np.abs(excess) <= CLEAR_AGREEMENT)
    return Triplet(name=name, s1=np.zeros((2,) + cloudy.shape[1:], np.float32), cloudy=cloudy,
                   target=clear, cloud_mask=cloud, gate_weight=trusted.astype(np.float32))


def read_s2_pairs(folder: Path) -> list:
    """The same-name pairs of `s2/` (cloud-free) and `s2_cloudy/` (the file names differ by
    `_s2_` against `_s2_cloudy_`)."""
    triplets = []
    for clear_path in sorted((folder / "s2").glob("*.tif")):
        cloudy_path = folder / "s2_cloudy" / clear_path.name.replace("_s2_", "_s2_cloudy_", 1)
        if cloudy_path.is_file():
            clear = _read_s2(clear_path)
            if not is_clear_image(clear):
                continue
            triplets.append(_gate_only(f"s2_pairs/{clear_path.stem}", _read_s2(cloudy_path),
                                       clear))
    return triplets


def clear_dates(stack: np.ndarray) -> np.ndarray:
    """Which dates of a T×13×H×W series are clear (see CLEAR_DATE_FRACTION)."""
    median = np.median(stack, axis=0)
    return np.array([derived_cloud_mask(image, median).mean() < CLEAR_DATE_FRACTION
                     for image in stack])


def read_time_series(folder: Path) -> list:
    """Every partly clouded date of the series with its nearest clear date as the reference."""
    dated = sorted((int(m.group(1)), m.group(2), path) for path in folder.glob("*.tif")
                   if (m := _DATE.search(path.name)))
    if len(dated) < 2:
        return []
    stack = np.stack([_read_s2(path) for _, _, path in dated])
    days = np.array([np.datetime64(date) for _, date, _ in dated]).astype("datetime64[D]")
    clear = clear_dates(stack)
    if not clear.any():
        return []
    clear_index = np.flatnonzero(clear)
    triplets = []
    for index in np.flatnonzero(~clear):
        if int(dated[index][1][5:7]) in SNOW_MONTHS:
            continue
        gaps = np.abs(days[clear_index] - days[index]).astype(int)
        reference = clear_index[int(np.argmin(gaps))]
        if derived_cloud_mask(stack[index], stack[reference]).mean() <= MAX_SERIES_CLOUD:
            triplets.append(_gate_only(f"series/{dated[index][1]}", stack[index],
                                       stack[reference]))
    return triplets


def load_optical_pairs(data_root) -> list:
    """All gate-only pairs under the shared data folder (none where the folders are missing)."""
    data_root = Path(data_root)
    triplets = []
    if (data_root / PAIRS_FOLDER).is_dir():
        triplets += read_s2_pairs(data_root / PAIRS_FOLDER)
    if (data_root / SERIES_FOLDER).is_dir():
        triplets += read_time_series(data_root / SERIES_FOLDER)
    return triplets
