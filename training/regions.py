"""Which pixels of a scene are clear, under thin cloud or under thick cloud, and the cloud mask a
triplet trains the gate against.

The packed SEN12MS-CR triplets carry a real binary cloud mask; the folder-layout triplets carry
none, so one is derived from the cloudy/clear pair itself: a pixel is cloud where the cloudy
date is brighter in the visible bands (B2, B3, B4) than the clear date by more than
`CLOUD_EXCESS`, or darker by more than `SHADOW_DEFICIT` (shadow). Two dates also differ through
the ground (harvest, flooding), so this over-marks change as cloud; that errs on the side of
restoring a pixel rather than keeping it.

Regions split the cloud further by how much the cloud adds in the visible bands: at least
`THICK_EXCESS` reflectance over the ground is thick (opaque or nearly: the ground's own contrast
is then mostly gone), less is thin. Clear is everything outside the mask.
"""
import numpy as np

CLEAR, THIN, THICK = 0, 1, 2
REGION_NAMES = ("clear", "thin", "thick")
CLOUD_EXCESS = 0.02
SHADOW_DEFICIT = 0.04
THICK_EXCESS = 0.15
# Clear pixels farther than this (px, chessboard distance) from any cloud pixel are "inner"
# clear ground: the gate's calibration reports them apart from the clear pixels along cloud
# edges, where the masks themselves are uncertain by a few pixels.
EDGE_DISTANCE = 8
_VISIBLE = [1, 2, 3]   # B2, B3, B4


def visible_excess(cloudy: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean visible reflectance the cloudy date adds over the clear one (H×W)."""
    return (cloudy[_VISIBLE] - target[_VISIBLE]).mean(axis=0)


def derived_cloud_mask(cloudy: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A cloud (and shadow) mask from a cloudy/clear pair; see the module docstring."""
    excess = visible_excess(cloudy, target)
    return (excess > CLOUD_EXCESS) | (excess < -SHADOW_DEFICIT)


def cloud_mask_of(triplet) -> np.ndarray:
    """The triplet's cloud mask as float32 (1 = cloud): its own, or one derived from the pair."""
    mask = triplet.cloud_mask
    if mask is None:
        mask = derived_cloud_mask(triplet.cloudy, triplet.target)
    return mask.astype(np.float32)


def triplet_regions(triplet) -> np.ndarray:
    """H×W region codes (CLEAR, THIN, THICK) of a triplet: its exact ones (simulated clouds), or
    derived from its mask and the pair."""
    if triplet.regions is not None:
        return triplet.regions
    cloud = cloud_mask_of(triplet) > 0.5
    thick = cloud & (visible_excess(triplet.cloudy, triplet.target) >= THICK_EXCESS)
    regions = np.full(cloud.shape, CLEAR, np.uint8)
    regions[cloud] = THIN
    regions[thick] = THICK
    return regions


def simulated_regions(cloud: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Region codes of a simulated sample from its exact cloud opacity and shadow strength."""
    regions = np.full(cloud.shape, CLEAR, np.uint8)
    regions[(cloud >= 0.02) | (shadow >= 0.02)] = THIN
    regions[cloud >= 0.5] = THICK
    return regions


def inner_clear(regions: np.ndarray, distance: int = EDGE_DISTANCE) -> np.ndarray:
    """Clear pixels with no thin or thick cloud pixel within `distance` px (a square
    neighbourhood, shrunk at the image edge): where the cloud fraction of the window is 0, as
    the adaptation ablation finds its clear ground."""
    from ..adaptation.ridge import box_mean   # imports the engine: only when scoring

    return box_mean(regions != CLEAR, 2 * distance + 1) == 0
