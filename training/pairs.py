"""Cloud-free S1 + S2 pairs from every such source in the shared data, for synthetic-cloud
pre-training.

Each source ships its pairs differently; everything is brought to one shape here (`ClearPair`:
13 L1C bands and VV/VH on [0, 1], one pixel grid, a validity mask):

- TerraMind (S1RTC/, S2L1C/): some S2 files carry the +1000 DN offset of processing baseline
  04.00; it is detected per file (core.sensors) and subtracted.
- Sen1Floods11 (S1/, S2/): EPSG:4326; S1 nodata is NaN and S2 nodata is 0, both masked out.
- dsen2cr_dsp (s1/, s2/): SEN12MS-CR patches without their cloudy twin.
- BigEarthNet: L2A, one file per band at 10/20/60 m and S1 as separate VV/VH files. The 20 and
  60 m bands are upsampled (bilinear) and S1 resampled onto the 10 m B02 grid. L2A has no B10
  (the 1375 nm cirrus band is dropped by atmospheric correction), so B10 is synthesised as the
  clear-sky constant measured on the L1C references here (8-18 DN, median about 12). L2A is
  bottom-of-atmosphere reflectance, darker than L1C mainly in B1-B4; we accept that bias for
  six small extra scenes rather than invent an inverse atmospheric correction.

- BigEarthNet from ConfigILM (bigearthnet_configilm/benv1, benv2): 54 more L2A pairs, one
  single-band GeoTIFF per band and per polarisation, with no CRS or transform (the arrays are
  already co-registered on a 120² 10 m grid). Pairs the shared summary flags as cloud or snow
  are left out.

All BigEarthNet pairs are L2A. Feeding bottom-of-atmosphere targets to a top-of-atmosphere
network would teach it to darken the blue bands under every cloud, so they are brought roughly
to L1C: each band gains the clear-sky path reflectance measured as the 1st percentile of the
L1C references here (`L1C_PATH_REFLECTANCE`, a dark-object estimate), and B9, which L2A
corrects for water vapour, is scaled back by the L1C median ratio B9/B8A (0.29). This is an
approximation of an inverse atmospheric correction, not one; it removes the bulk of the bias.

Scenes bright throughout (median B2 reflectance above 0.35: snow fields or cloud, e.g. TerraMind
609U_541L_3_0) are left out: a "clear" reference that is itself white would teach the network that
clouds are ground.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..core.grid import S1OnS2Grid
from ..core.sensors import detect_s2_offset
from .triplet import ClearPair, scale_s1_db, scale_s2_dn

S2_BAND_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                 "B11", "B12")
CLEAR_SKY_B10_DN = 12
# Per band (B1..B12), reflectance: the 1st percentile of every clear L1C reference here
# (TerraMind, dsen2cr_dsp, Sen1Floods11, packed targets), i.e. the path reflectance a dark
# object shows at the top of the atmosphere. B10 is set separately (CLEAR_SKY_B10_DN).
L1C_PATH_REFLECTANCE = np.array([0.104, 0.077, 0.052, 0.030, 0.026, 0.023, 0.021, 0.017, 0.016,
                                 0.007, 0.0, 0.004, 0.002], np.float32)
L1C_B9_OVER_B8A = 0.29
_B8A, _B9 = 8, 9
MAX_MEDIAN_B2 = 0.35
_B2 = 1


def make_pair(name: str, s1_db: np.ndarray, s2_dn: np.ndarray, s2_nodata=None) -> ClearPair:
    """Scale one co-registered pair, detecting the S2 DN offset and masking missing pixels."""
    s2_dn = s2_dn.astype(np.float32)
    valid = np.isfinite(s1_db).all(0) & np.isfinite(s2_dn).all(0)
    if s2_nodata is not None:
        valid &= ~(s2_dn == s2_nodata).all(0)
    offset = detect_s2_offset(s2_dn, valid)
    return ClearPair(name=name, s1=scale_s1_db(s1_db.astype(np.float32)),
                     s2=scale_s2_dn(s2_dn, offset), valid=valid)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def _same_name_pairs(s1_dir: Path, s2_dir: Path, prefix: str, s2_nodata=None) -> list:
    return [make_pair(f"{prefix}/{s1.stem}", _read(s1), _read(s2_dir / s1.name), s2_nodata)
            for s1 in sorted(s1_dir.glob("*.tif")) if (s2_dir / s1.name).is_file()]


def read_terramind(folder: Path) -> list:
    return _same_name_pairs(folder / "S1RTC", folder / "S2L1C", "terramind")


def read_dsen2cr_dsp(folder: Path) -> list:
    return _same_name_pairs(folder / "s1", folder / "s2", "dsen2cr_dsp")


def read_sen1floods11(folder: Path) -> list:
    pairs = []
    for s1_path in sorted((folder / "S1").glob("*_S1Hand.tif")):
        s2_path = folder / "S2" / s1_path.name.replace("_S1Hand", "_S2Hand")
        if not s2_path.is_file():
            continue
        with rasterio.open(s1_path) as s1, rasterio.open(s2_path) as s2:
            s1_db = s1.read().astype(np.float32)
            if s1.nodata is not None and not np.isnan(s1.nodata):
                s1_db[s1_db == s1.nodata] = np.nan
            pairs.append(make_pair(f"sen1floods11/{s1_path.stem}", s1_db, s2.read(), s2.nodata))
    return pairs


def _l2a_bands(paths_of_band, shape) -> np.ndarray:
    """The 13 bands in DN on a `shape` grid (20/60 m upsampled bilinearly; B10 synthesised)."""
    return np.stack([np.full(shape, CLEAR_SKY_B10_DN, np.float32) if band == "B10"
                     else _read_band(paths_of_band(band), shape) for band in S2_BAND_NAMES])


def _bigearthnet_pair(s1_dir: Path, s2_dir: Path) -> ClearPair:
    stem = s2_dir.name
    with rasterio.open(s2_dir / f"{stem}_B02.tif") as grid:
        shape = (grid.height, grid.width)
        bands = _l2a_bands(lambda band: s2_dir / f"{stem}_{band}.tif", shape)
        s1 = []
        for pol in ("VV", "VH"):
            with rasterio.open(s1_dir / f"{s1_dir.name}_{pol}.tif") as src, \
                    S1OnS2Grid(src, grid) as aligned:
                s1.append(aligned.read(Window(0, 0, grid.width, grid.height))[0])
    return make_pair(f"bigearthnet/{stem}", np.stack(s1), l2a_as_l1c(bands))


def l2a_as_l1c(dn: np.ndarray) -> np.ndarray:
    """13 L2A bands in DN (B10 already filled) -> approximate L1C DN; see the module docstring."""
    dn = dn.astype(np.float32).copy()
    dn[_B9] = L1C_B9_OVER_B8A * dn[_B8A]
    return dn + 10000.0 * L1C_PATH_REFLECTANCE[:, None, None]


def _read_band(path: Path, shape) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float32)


def _configilm_flags(folder: Path) -> set:
    """Names of the pairs the shared summary flags as cloud or snow."""
    import csv

    summary = folder / "pairs_summary.csv"
    if not summary.is_file():
        return set()
    with summary.open() as f:
        return {row["s2"] for row in csv.DictReader(f)
                if "True" in (row.get("cloud_flag"), row.get("snow_flag"))}


def read_bigearthnet_configilm(folder: Path) -> list:
    """The ConfigILM BigEarthNet pairs: one folder each, *_B01.tif … *_B12.tif, *_VV/VH.tif."""
    flagged = _configilm_flags(folder)
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for pair_dir in sorted(folder.glob("benv*/*/")):
            if pair_dir.name in flagged:
                continue
            vv = sorted(pair_dir.glob("*_VV.tif"))
            vh = sorted(pair_dir.glob("*_VH.tif"))
            b02 = sorted(pair_dir.glob("*_B02.tif"))
            if not (vv and vh and b02):
                continue
            with rasterio.open(b02[0]) as grid:
                shape = (grid.height, grid.width)
            bands = _l2a_bands(lambda band: next(pair_dir.glob(f"*_{band}.tif")), shape)
            s1 = np.stack([_read_band(vv[0], shape), _read_band(vh[0], shape)])
            pairs.append(make_pair(f"bigearthnet_configilm/{pair_dir.parent.name}/"
                                   f"{pair_dir.name}", s1, l2a_as_l1c(bands)))
    return pairs


def read_bigearthnet(folder: Path) -> list:
    """Pairs named by each S1 patch's metadata (`corresponding_s2_patch`)."""
    pairs = []
    for meta_path in sorted(folder.glob("BigEarthNet-S1-Example/*/*_labels_metadata.json")):
        s2_name = json.loads(meta_path.read_text())["corresponding_s2_patch"]
        s2_dir = folder / "BigEarthNet-S2-Example" / s2_name
        if s2_dir.is_dir():
            pairs.append(_bigearthnet_pair(meta_path.parent, s2_dir))
    return pairs


SOURCES = {
    "terramind": ("terramind_examples", read_terramind),
    "sen1floods11": ("sen1floods11_sample", read_sen1floods11),
    "dsen2cr_dsp": ("sen12mscr_partial/dsen2cr_dsp", read_dsen2cr_dsp),
    "bigearthnet": ("bigearthnet_example", read_bigearthnet),
    "bigearthnet_configilm": ("bigearthnet_configilm", read_bigearthnet_configilm),
}


def is_clear_image(s2: np.ndarray, valid=None) -> bool:
    """False for an S2 image bright throughout (snow or cloud; over its `valid` pixels, all by
    default), which makes a poor clear reference."""
    b2 = s2[_B2] if valid is None else s2[_B2][valid]
    return b2.size > 0 and float(np.median(b2)) <= MAX_MEDIAN_B2


def is_clear_enough(pair: ClearPair) -> bool:
    """False for scenes bright throughout (snow or cloud), which make poor clear references."""
    return is_clear_image(pair.s2, pair.valid)


def load_clear_pairs(data_root, sources=tuple(SOURCES)) -> list:
    """Every usable cloud-free pair of the named sources under the shared data folder."""
    data_root = Path(data_root)
    pairs = []
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"unknown pair source {source!r}; expected one of {tuple(SOURCES)}")
        subfolder, reader = SOURCES[source]
        if (data_root / subfolder).is_dir():
            pairs += [p for p in reader(data_root / subfolder) if is_clear_enough(p)]
    return pairs
