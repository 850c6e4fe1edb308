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

Scenes bright throughout (median B2 reflectance above 0.35: snow fields or cloud, e.g. TerraMind
609U_541L_3_0) are left out: a "clear" reference that is itself white would teach the network that
clouds are ground.
"""
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..core.grid import S1OnS2Grid
from ..core.sensors import detect_s2_offset
from .triplet import ClearPair, scale_s1_db, scale_s2_dn

S2_BAND_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                 "B11", "B12")
CLEAR_SKY_B10_DN = 12
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


def _bigearthnet_pair(s1_dir: Path, s2_dir: Path) -> ClearPair:
    stem = s2_dir.name
    with rasterio.open(s2_dir / f"{stem}_B02.tif") as grid:
        shape = (grid.height, grid.width)
        bands = []
        for band in S2_BAND_NAMES:
            path = s2_dir / f"{stem}_{band}.tif"
            if band == "B10":
                bands.append(np.full(shape, CLEAR_SKY_B10_DN, np.float32))
                continue
            with rasterio.open(path) as src:
                bands.append(src.read(1, out_shape=shape,
                                      resampling=Resampling.bilinear))
        s1 = []
        for pol in ("VV", "VH"):
            with rasterio.open(s1_dir / f"{s1_dir.name}_{pol}.tif") as src, \
                    S1OnS2Grid(src, grid) as aligned:
                s1.append(aligned.read(Window(0, 0, grid.width, grid.height))[0])
    return make_pair(f"bigearthnet/{stem}", np.stack(s1), np.stack(bands).astype(np.float32))


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
}


def is_clear_enough(pair: ClearPair) -> bool:
    """False for scenes bright throughout (snow or cloud), which make poor clear references."""
    return bool(pair.valid.any()) and float(np.median(pair.s2[_B2][pair.valid])) <= MAX_MEDIAN_B2


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
