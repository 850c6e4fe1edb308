"""Packed SEN12MS-CR triplets: `<id>_input.tif` (15 bands: VV, VH, then the 13 cloudy S2
bands), `<id>_target.tif` (13 cloud-free S2 bands) and `<id>_mask.tif` (cloud mask 0/1).

This is how evaluation dumps store triplets (ours in data/sen12mscr/packed). They carry no
georeferencing, and values are unscaled (dB and DN as float32), so they are scaled here exactly as
the SEN12MS-CR folders are.
"""
import re
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from .triplet import Triplet, scale_s1_db, scale_s2_dn

_INPUT = re.compile(r"^(.+)_input\.tif$")


def find_packed(folder) -> list:
    """Ids of the complete packed triplets in `folder`, in numeric order where ids are numbers."""
    folder = Path(folder)
    ids = [m.group(1) for m in (_INPUT.match(p.name) for p in folder.glob("*_input.tif")) if m]
    complete = [i for i in ids if (folder / f"{i}_target.tif").is_file()]
    return sorted(complete, key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i))


def _read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            return dataset.read()


def read_packed(folder, triplet_id: str) -> Triplet:
    """Read and scale one packed triplet; the mask is used when its file exists."""
    folder = Path(folder)
    packed_input = _read(folder / f"{triplet_id}_input.tif")
    if packed_input.shape[0] != 15:
        raise ValueError(f"{triplet_id}_input.tif has {packed_input.shape[0]} bands, expected 15")
    mask_path = folder / f"{triplet_id}_mask.tif"
    mask = _read(mask_path)[0] > 0.5 if mask_path.is_file() else None
    return Triplet(name=str(triplet_id),
                   s1=scale_s1_db(packed_input[:2]),
                   cloudy=scale_s2_dn(packed_input[2:]),
                   target=scale_s2_dn(_read(folder / f"{triplet_id}_target.tif")),
                   cloud_mask=mask)
