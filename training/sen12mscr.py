"""SEN12MS-CR folders: finding the (S1, S2, cloudy S2) triplets and their official split.

Two layouts are read:

- the dataset as distributed: `ROIs1158_spring_s1/s1_<scene>/ROIs1158_spring_s1_<scene>_p<patch>.tif`
  with `_s2/s2_<scene>/..._s2_...` and `_s2_cloudy/s2_cloudy_<scene>/..._s2_cloudy_...` twins;
- a flat folder with `s1/`, `s2/`, `s2_cloudy/` holding files of the same name
  (`ROIs2017_winter_112_p797.tif`), as many repositories ship samples.

The split is decided per ROI, i.e. per (season group, scene number), compared as a pair of exact
values. The widely copied loader tests `roi in path` on strings instead, so its train entry
`.../s1_1` also claims `.../s1_106`, `.../s1_123` and `.../s1_140`: six of the ten test ROIs leak
into training. Parsing the scene number and comparing integers cannot do that.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio

from .triplet import Triplet, scale_s1_db, scale_s2_dn


# The official mono-temporal SEN12MS-CR split (Ebel et al.; as listed by UnCRtainTS and reused
# by later work): scene numbers per season group.
_SPLIT_SCENES = {
    "test": {"ROIs1158_spring": (106, 123, 140, 31, 44), "ROIs1868_summer": (119, 73),
             "ROIs1970_fall": (139,), "ROIs2017_winter": (108, 63)},
    "val": {"ROIs1158_spring": (17,), "ROIs1868_summer": (19, 80, 127, 17),
            "ROIs1970_fall": (65,), "ROIs2017_winter": (22, 107, 130, 84)},
    "train": {
        "ROIs1158_spring": (9, 1, 124, 40, 101, 21, 134, 145, 141, 66, 8, 26, 77, 113, 100, 117,
                            119, 6, 58, 120, 110, 126, 115, 121, 39, 109, 63, 75, 132, 128, 142,
                            15, 45, 97, 147),
        # 100 is a test ROI of SEN12MS-CR-TS; the mono-temporal split trains on it.
        "ROIs1868_summer": (90, 87, 25, 124, 114, 135, 40, 101, 42, 31, 36, 139, 56, 133, 55, 43,
                            113, 76, 123, 143, 93, 125, 89, 120, 126, 72, 115, 121, 146, 140, 95,
                            102, 7, 11, 132, 15, 137, 4, 27, 147, 86, 47, 100),
        "ROIs1970_fall": (3, 22, 148, 107, 1, 114, 135, 40, 42, 31, 149, 64, 28, 144, 57, 35,
                          133, 30, 134, 141, 112, 116, 37, 26, 77, 100, 83, 71, 93, 119, 104,
                          136, 6, 41, 125, 91, 131, 120, 110, 19, 14, 81, 39, 109, 33, 88, 11,
                          128, 142, 122, 4, 27, 147, 85, 82, 105),
        "ROIs2017_winter": (68, 25, 62, 135, 42, 64, 21, 55, 112, 116, 8, 59, 49, 104, 81, 146,
                            75, 94, 102, 61, 47),
    },
}
SPLITS = tuple(_SPLIT_SCENES)
OFFICIAL_ROIS = {split: frozenset((group, scene) for group, scenes in groups.items()
                                  for scene in scenes)
                 for split, groups in _SPLIT_SCENES.items()}

_GROUP = r"(ROIs\d{4}_[a-z]+)"
_NESTED_SEED = re.compile(rf"^{_GROUP}_s1$")
_NESTED_SCENE = re.compile(r"^s1_(\d+)$")
_NESTED_FILE = re.compile(rf"^{_GROUP}_s1_(\d+)_p(\d+)\.tif$")
_FLAT_FILE = re.compile(rf"^{_GROUP}_(\d+)_p?(\d+)\.tif$")


def split_of(group: str, scene: int) -> Optional[str]:
    """The official split of an ROI, or None for an ROI the split does not list."""
    for split, rois in OFFICIAL_ROIS.items():
        if (group, int(scene)) in rois:
            return split
    return None


@dataclass(frozen=True)
class TripletFiles:
    """Where one SEN12MS-CR patch lives."""
    group: str
    scene: int
    patch: int
    s1: Path
    s2: Path
    s2_cloudy: Path

    @property
    def name(self) -> str:
        return f"{self.group}_{self.scene}_p{self.patch}"

    @property
    def split(self) -> Optional[str]:
        return split_of(self.group, self.scene)


def _nested_triplets(root: Path):
    for seed in sorted(root.iterdir()):
        match = _NESTED_SEED.match(seed.name)
        if not (match and seed.is_dir()):
            continue
        group = match.group(1)
        for scene_dir in sorted(seed.iterdir()):
            scene_match = _NESTED_SCENE.match(scene_dir.name)
            if not (scene_match and scene_dir.is_dir()):
                continue
            scene = int(scene_match.group(1))
            for s1 in sorted(scene_dir.glob("*.tif")):
                file_match = _NESTED_FILE.match(s1.name)
                if not file_match or file_match.group(1) != group \
                        or int(file_match.group(2)) != scene:
                    continue
                patch = int(file_match.group(3))
                twins = [root / f"{group}_{mod}" / f"{mod}_{scene}" / f"{group}_{mod}_{scene}_p{patch}.tif"
                         for mod in ("s2", "s2_cloudy")]
                yield TripletFiles(group, scene, patch, s1, *twins)


def _flat_triplets(root: Path):
    for s1 in sorted((root / "s1").glob("*.tif")):
        match = _FLAT_FILE.match(s1.name)
        if match:
            yield TripletFiles(match.group(1), int(match.group(2)), int(match.group(3)), s1,
                               root / "s2" / s1.name, root / "s2_cloudy" / s1.name)


def find_triplets(root, split: Optional[str] = None) -> list:
    """Every complete triplet under `root` (either layout), optionally of one official split.

    Patches missing one of the three files are skipped, as the dataset has a few.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root)
    found = [t for t in (*_nested_triplets(root), *_flat_triplets(root))
             if t.s2.is_file() and t.s2_cloudy.is_file()]
    return [t for t in found if split is None or t.split == split]


def read_triplet(files: TripletFiles) -> Triplet:
    """Read and scale one triplet; SEN12MS-CR has no cloud mask of its own (mask None)."""
    with rasterio.open(files.s1) as s1, rasterio.open(files.s2) as s2, \
            rasterio.open(files.s2_cloudy) as cloudy:
        return Triplet(name=files.name,
                       s1=scale_s1_db(s1.read().astype(np.float32)),
                       cloudy=scale_s2_dn(cloudy.read()),
                       target=scale_s2_dn(s2.read()))
