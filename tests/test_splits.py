"""The official SEN12MS-CR split, matched on exact ROI folders (no substring leak)."""
from pathlib import Path

import pytest

from sar_cloud_removal.training import sen12mscr
from sar_cloud_removal.training.sen12mscr import OFFICIAL_ROIS, find_triplets, split_of


def test_official_splits_are_disjoint_and_complete():
    train, val, test = OFFICIAL_ROIS["train"], OFFICIAL_ROIS["val"], OFFICIAL_ROIS["test"]
    assert (len(train), len(val), len(test)) == (155, 10, 10)
    assert not train & val and not train & test and not val & test


def test_scene_numbers_that_prefix_each_other_stay_in_their_own_split():
    # the substring loader puts all of these test ROIs into training via s1_1, s1_11, s1_7
    for group, scene in [("ROIs1158_spring", 106), ("ROIs1158_spring", 123),
                         ("ROIs1158_spring", 140), ("ROIs1868_summer", 119),
                         ("ROIs1868_summer", 73), ("ROIs1970_fall", 139)]:
        assert split_of(group, scene) == "test"
    assert split_of("ROIs1158_spring", 1) == "train"
    assert split_of("ROIs1868_summer", 11) == "train"
    assert split_of("ROIs1868_summer", 7) == "train"
    assert split_of("ROIs1970_fall", 65) == "val"      # the loader leaks it via s1_6
    assert split_of("ROIs1970_fall", 6) == "train"
    assert split_of("ROIs1158_spring", 2) is None      # an ROI the split does not list


def _touch_triplet(root: Path, group: str, scene: int, patch: int):
    for mod in ("s1", "s2", "s2_cloudy"):
        folder = root / f"{group}_{mod}" / f"{mod}_{scene}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{group}_{mod}_{scene}_p{patch}.tif").touch()


def test_folder_reader_assigns_prefix_scenes_exactly(tmp_path):
    scenes = [1, 10, 100, 106, 123, 140, 17]
    for scene in scenes:
        _touch_triplet(tmp_path, "ROIs1158_spring", scene, patch=5)
    # a patch whose cloudy twin is missing is not a triplet
    (tmp_path / "ROIs1158_spring_s1" / "s1_1" / "ROIs1158_spring_s1_1_p9.tif").touch()

    by_split = {split: {t.scene for t in find_triplets(tmp_path, split)}
                for split in sen12mscr.SPLITS}
    assert by_split["train"] == {1, 100}
    assert by_split["test"] == {106, 123, 140}
    assert by_split["val"] == {17}
    every = find_triplets(tmp_path)
    assert {t.scene for t in every} == set(scenes)     # 10 is in no split but still found
    assert all(t.patch == 5 for t in every)
    names = [t.name for t in every]
    assert len(names) == len(set(names))
    assert not by_split["train"] & by_split["test"]


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError):
        find_triplets(tmp_path, "training")
