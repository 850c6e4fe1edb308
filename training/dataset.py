"""The torch Dataset that training draws from: simulated clouds over clear pairs, real triplets,
or a weighted mix of both.

With 16 real triplets and about 20 clear scenes, an "epoch" over files means nothing; every item
is instead a fresh random draw (source by weight, scene, crop, dihedral turn, clouds), seeded by
(seed, epoch, index). That makes runs repeatable, lets `DistributedSampler` hand each rank
different indices and so different examples, and keeps a resumed run from replaying the draws
it already trained on (the epoch moves on).
"""
import numpy as np
import torch
from torch.utils.data import Dataset

from ..synthetic.clouds import clear_sky_target, simulate_clouds
from ..synthetic.augment import crop, random_dihedral, random_window
from .regions import cloud_mask_of
from .triplet import ClearPair

# A crop must be (nearly) all valid pixels; a few redraws find one in any of our scenes.
_MIN_VALID_FRACTION = 0.99
_CROP_ATTEMPTS = 10


class SyntheticClouds:
    """Crops of clear pairs under freshly simulated clouds (the target is the clear crop).

    `gate_weight` is how much their exact masks count in the gate's loss (0: the gate learns
    from real clouds alone; the image terms are unchanged).
    """

    def __init__(self, pairs, kind: str = "mixed", clear_below: float = 0.0,
                 gate_weight: float = 1.0):
        if not pairs:
            raise ValueError("synthetic clouds need at least one clear S1+S2 pair")
        if gate_weight < 0:
            raise ValueError("the simulated clouds' gate weight must be at least 0")
        self.pairs, self.kind, self.clear_below = list(pairs), kind, clear_below
        self.gate_weight = np.float32(gate_weight)

    def draw(self, rng: np.random.Generator, size: int) -> dict:
        for _ in range(_CROP_ATTEMPTS):
            pair = self.pairs[rng.integers(len(self.pairs))]
            row, col = random_window(rng, *pair.valid.shape, size)
            s1, s2, valid = crop([pair.s1, pair.s2, pair.valid], row, col, size)
            if valid.mean() >= _MIN_VALID_FRACTION:
                break
        s1, s2 = random_dihedral([s1, s2], rng)
        sample = simulate_clouds(s2, rng, kind=self.kind)
        # the engine clips inputs to [0, 1]; bright simulated cloud must look the same
        return {"s2": np.clip(sample.cloudy, 0.0, 1.0), "s1": s1, "target": s2,
                "clear": clear_sky_target(sample, self.clear_below),
                "gate_weight": np.full_like(s2[0], self.gate_weight),
                "image_weight": np.float32(1.0)}


class RealTriplets:
    """Aligned random crops of real cloudy/clear triplets.

    `image_weight` is how much their images count in the loss's image terms (models.losses);
    0 makes them gate-only examples (training.optical_pairs: real clouds without S1).
    """

    def __init__(self, triplets, image_weight: float = 1.0):
        if not triplets:
            raise ValueError("real-triplet training needs at least one triplet")
        self.triplets, self.image_weight = list(triplets), np.float32(image_weight)

    def draw(self, rng: np.random.Generator, size: int) -> dict:
        t = self.triplets[rng.integers(len(self.triplets))]
        row, col = random_window(rng, *t.target.shape[-2:], size)
        trusted = t.gate_weight if t.gate_weight is not None else \
            np.ones(t.target.shape[-2:], np.float32)
        s1, s2, target, mask, gate_weight = random_dihedral(
            crop([t.s1, t.cloudy, t.target, cloud_mask_of(t), trusted], row, col, size), rng)
        return {"s2": s2, "s1": s1, "target": target, "clear": 1.0 - mask,
                "gate_weight": gate_weight, "image_weight": self.image_weight}


# Coverages of the fixed simulated selection scenes: every held-out pair is shown under each.
SELECTION_COVERAGES = (0.3, 0.6, 0.9)


def simulated_triplets(pairs, seed: int = 0, coverages=SELECTION_COVERAGES) -> list:
    """Fixed cloudy versions of held-out clear pairs, for choosing checkpoints: the same clouds
    at every validation, with their exact masks and regions."""
    from .regions import CLEAR, simulated_regions
    from .triplet import Triplet

    triplets = []
    for index, pair in enumerate(pairs):
        for coverage in coverages:
            rng = np.random.default_rng([seed, index, int(coverage * 100)])
            sample = simulate_clouds(pair.s2, rng, kind="mixed", coverage=coverage)
            regions = simulated_regions(sample.cloud, sample.shadow)
            triplets.append(Triplet(name=f"{pair.name}@{coverage:.1f}", s1=pair.s1,
                                    cloudy=np.clip(sample.cloudy, 0.0, 1.0), target=pair.s2,
                                    cloud_mask=regions != CLEAR, regions=regions))
    return triplets


def as_clear_pair(triplet) -> ClearPair:
    """The cloud-free half of a real triplet, as one more scene to lay simulated clouds on."""
    return ClearPair(name=triplet.name, s1=triplet.s1, s2=triplet.target,
                     valid=np.ones(triplet.target.shape[-2:], bool))


class MixedDataset(Dataset):
    """`length` random examples per epoch from weighted sources; items are dicts of float32
    tensors `s2` (13×S×S), `s1` (2×S×S), `target` (13×S×S), `clear` (S×S, the gate's
    target: 1 = clear sky, 0 = to be restored), `gate_weight` (S×S: 1 where that target is
    trusted, 0 where the gate term should ignore it) and `image_weight` (a scalar: 1, or 0 for
    a gate-only example)."""

    def __init__(self, sources, weights, crop_size: int, length: int, seed: int = 0):
        if len(sources) != len(weights) or not sources or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("give one non-negative weight per source, not all zero")
        self.sources = list(sources)
        self.probabilities = np.asarray(weights, float) / float(sum(weights))
        self.crop_size, self.length, self.seed, self.epoch = crop_size, length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        source = self.sources[rng.choice(len(self.sources), p=self.probabilities)]
        example = source.draw(rng, self.crop_size)
        return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
                for key, value in example.items()}
