"""Small real GeoTIFFs for engine tests: S2/S1 pairs on chosen grids, written with rasterio.

Import it from a test as `import georasters` (pytest puts tests/ on sys.path).
"""
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

UTM31 = "EPSG:32631"
ORIGIN = (600000.0, 5000000.0)  # a point in UTM zone 31N (France)


def write_tif(path, data: np.ndarray, crs=UTM31, transform=None, nodata=None) -> Path:
    """Write (bands, rows, cols) `data` as a GeoTIFF; crs=None writes one without georeferencing."""
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(*ORIGIN, 10, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return Path(path)


def s2_dn(rows: int, cols: int, seed=0, dtype=np.uint16, low=0, high=10000) -> np.ndarray:
    """13 bands of random DN in [low, high]: every pixel differs, so any shift or seam shows."""
    return np.random.default_rng(seed).integers(low, high + 1, (13, rows, cols)).astype(dtype)


def s1_db(rows: int, cols: int, seed=1) -> np.ndarray:
    """VV, VH backscatter in dB, a smooth field over the usual -25..0 dB range plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    field = -12 + 6 * np.sin(x / 17.0) * np.cos(y / 23.0)
    return np.stack([field, field - 7]).astype(np.float32) + rng.normal(0, 0.5, (2, rows, cols)) \
        .astype(np.float32)


def pair(folder, rows=200, cols=150, s2=None, s1=None, s2_nodata=None, s1_transform=None,
         s1_crs=UTM31):
    """Write an S2 and an S1 image into `folder` (S1 on the S2 grid unless told otherwise)."""
    folder = Path(folder)
    s2 = s2_dn(rows, cols) if s2 is None else s2
    s1 = s1_db(rows, cols) if s1 is None else s1
    return (write_tif(folder / "s2.tif", s2, nodata=s2_nodata),
            write_tif(folder / "s1.tif", s1, crs=s1_crs, transform=s1_transform))


def files_in(folder) -> set:
    """Names of every file in `folder`, hidden ones included (temporary outputs are hidden)."""
    return {p.name for p in Path(folder).iterdir()}
