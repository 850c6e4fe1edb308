"""Data readers on the real shared samples, and augmentation that keeps arrays aligned."""
import numpy as np
import pytest
import rasterio

from sar_cloud_removal.synthetic import augment
from sar_cloud_removal.training import pairs
from sar_cloud_removal.training.dataset import (MixedDataset, RealTriplets, SyntheticClouds,
                                                as_clear_pair)
from sar_cloud_removal.training.packed import find_packed, read_packed
from sar_cloud_removal.training.sen12mscr import find_triplets, read_triplet


def test_packed_triplets_are_split_into_sensors_and_scaled(shared_data):
    folder = shared_data / "sen12mscr" / "packed"
    ids = find_packed(folder)
    assert len(ids) == 15 and ids[:3] == ["316", "581", "746"]
    triplet = read_packed(folder, "4294")
    with rasterio.open(folder / "4294_input.tif") as src:
        raw = src.read()
    assert triplet.s1.shape == (2, 256, 256) and triplet.cloudy.shape == (13, 256, 256)
    np.testing.assert_allclose(triplet.s1[0], (np.clip(raw[0], -25, 0) + 25) / 25, atol=1e-6)
    np.testing.assert_allclose(triplet.cloudy[3], np.clip(raw[5], 0, 10000) / 10000, atol=1e-6)
    assert triplet.target.min() >= 0 and triplet.target.max() <= 1
    assert triplet.cloud_mask.dtype == bool
    assert 0.9 < triplet.cloud_mask.mean() < 1.0          # 4294 is almost fully cloudy


def test_georeferenced_flat_triplet_is_found_and_read(shared_data):
    found = find_triplets(shared_data / "sen12mscr")
    assert [t.name for t in found] == ["ROIs2017_winter_112_p797"]
    assert found[0].split == "train"
    triplet = read_triplet(found[0])
    assert triplet.cloud_mask is None
    assert triplet.s1.shape == (2, 256, 256) and triplet.target.shape == (13, 256, 256)
    assert 0 <= triplet.s1.min() and triplet.s1.max() <= 1


def test_terramind_offset_is_removed_and_bright_scene_left_out(shared_data):
    folder = shared_data / "terramind_examples"
    read = {p.name.split("/")[1]: p for p in pairs.read_terramind(folder)}
    assert len(read) == 5
    with rasterio.open(folder / "S2L1C" / "282D_485L_3_3.tif") as src:
        raw_b10 = src.read(11).astype(float)
    # +1000 offset subtracted: clear-sky cirrus band back at a few DN, not ~1010
    np.testing.assert_allclose(read["282D_485L_3_3"].s2[10], (raw_b10 - 1000) / 10000, atol=1e-6)
    assert np.median(read["637U_59R_1_3"].s2[10]) < 0.005     # no offset there, none removed
    assert not pairs.is_clear_enough(read["609U_541L_3_0"])    # snow/cloud throughout
    assert pairs.is_clear_enough(read["282D_485L_3_3"])


def test_bigearthnet_bands_are_upsampled_and_b10_synthesised(shared_data):
    got = pairs.read_bigearthnet(shared_data / "bigearthnet_example")
    assert len(got) == 6
    pair = got[0]
    assert pair.s2.shape == (13, 120, 120) and pair.s1.shape == (2, 120, 120)
    assert np.all(pair.s2[10] == np.float32(pairs.CLEAR_SKY_B10_DN / 10000))
    assert pair.valid.all()
    # the 60 m B01 arrives on the 10 m grid, smoothly (bilinear), not as 6x6 blocks
    assert len(np.unique(pair.s2[0][:6, :6])) > 1


def test_every_pair_source_loads_with_one_grid_per_pair(shared_data):
    loaded = pairs.load_clear_pairs(shared_data)
    sources = {p.name.split("/")[0] for p in loaded}
    assert sources == {"terramind", "sen1floods11", "dsen2cr_dsp", "bigearthnet",
                       "bigearthnet_configilm"}
    for pair in loaded:
        assert pair.s1.shape[1:] == pair.s2.shape[1:] == pair.valid.shape
        assert pair.s2.dtype == np.float32 and 0 <= pair.s2.min() and pair.s2.max() <= 1


def test_crop_and_turn_keep_every_array_aligned():
    rows, cols = np.mgrid[0:40, 0:50]
    code = (rows * 1000 + cols).astype(np.float64)           # unique value per pixel
    stack = np.stack([code, -code, code * 2])
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(30):
        a, b, mask = augment.random_crop_and_turn([stack, code[None], code], rng, 16)
        assert a.shape == (3, 16, 16) and b.shape == (1, 16, 16) and mask.shape == (16, 16)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], -mask)
        np.testing.assert_array_equal(a[2], 2 * mask)
        # still a piece of the original grid: neighbours differ by 1 (a column) or 1000 (a row)
        steps = {abs(int(d)) for d in np.diff(mask, axis=1).ravel()}
        assert steps in ({1}, {1000})
        seen.add((int(mask[0, 0]), int(mask[0, 1] - mask[0, 0])))
    assert len(seen) > 10                                      # crops and turns really vary
    with pytest.raises(ValueError):
        augment.random_crop_and_turn([code, code[:30]], rng, 16)


def test_mixed_dataset_is_repeatable_and_shaped(shared_data):
    packed = shared_data / "sen12mscr" / "packed"
    triplets = [read_packed(packed, i) for i in ("316", "581")]
    sources = [SyntheticClouds([as_clear_pair(t) for t in triplets]), RealTriplets(triplets)]
    dataset = MixedDataset(sources, [1.0, 1.0], crop_size=32, length=8, seed=5)
    first, again = dataset[3], dataset[3]
    for key, channels in (("s2", 13), ("s1", 2), ("target", 13)):
        assert first[key].shape == (channels, 32, 32)
        assert (first[key] == again[key]).all()
    assert first["clear"].shape == (32, 32) and (first["clear"] == again["clear"]).all()
    dataset.set_epoch(1)
    assert not (dataset[3]["target"] == first["target"]).all()
