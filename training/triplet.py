"""The examples the training tools pass around, already on the network's [0, 1] scale.

Every reader (SEN12MS-CR folders, packed triplets, cloud-free pairs) returns one of these two
shapes, so augmentation, datasets and the evaluator need no per-source code.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..core.sensors import normalise_s1, normalise_s2


@dataclass
class Triplet:
    """A real cloudy scene with its cloud-free reference (SEN12MS-CR style)."""
    name: str
    s1: np.ndarray                # 2×H×W float32, VV/VH on [0, 1]
    cloudy: np.ndarray            # 13×H×W float32, L1C reflectance clipped to [0, 1]
    target: np.ndarray            # 13×H×W float32, the cloud-free reference
    cloud_mask: Optional[np.ndarray] = None   # H×W bool, True = cloud; None when unknown
    regions: Optional[np.ndarray] = None      # H×W clear/thin/thick codes where known exactly
    gate_weight: Optional[np.ndarray] = None  # H×W float32: 1 where the mask is trusted, 0 where
                                              # not (training.optical_pairs); None: trusted


@dataclass
class ClearPair:
    """A cloud-free S2 image with co-registered S1: clouds are simulated on top of it."""
    name: str
    s1: np.ndarray                # 2×H×W float32 on [0, 1]
    s2: np.ndarray                # 13×H×W float32 on [0, 1]
    valid: np.ndarray             # H×W bool: both sensors have data here


def scale_s1_db(db: np.ndarray) -> np.ndarray:
    """S1 dB -> [0, 1]; missing values (NaN) become 0, i.e. -25 dB, as in the reference loader."""
    return np.nan_to_num(normalise_s1(db, linear=False), nan=0.0)


def scale_s2_dn(dn: np.ndarray, offset: int = 0) -> np.ndarray:
    """S2 L1C DN -> [0, 1], NaN-safe (NaN reads as 0 reflectance)."""
    return normalise_s2(np.nan_to_num(dn, nan=0.0), offset)
