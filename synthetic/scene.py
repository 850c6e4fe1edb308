"""Generated S1/S2 scenes of any size, written window by window.

The demo and the benchmark need realistic inputs that ship with no data: a cloudy Sentinel-2 L1C
(uint16 DN, 13 bands, UTM at 10 m), its clear twin, and a Sentinel-1 image (VV, VH in dB) on a
*different* grid (EPSG:4326 at about 20 m), so the engine's reprojection is exercised as with
real products. Every field is a function of global coordinates (`noise`), so a 100-megapixel
scene is produced one window at a time and memory stays flat.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import array_bounds, from_origin
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..core.model_spec import S1_BANDS, S2_BANDS
from .clouds import CloudField
from .landcover import Landscape
from .noise import hash_uniform

S2_CRS = "EPSG:32632"
S2_ORIGIN = (600000.0, 5300000.0)   # upper-left corner (x, y): southern Germany
S2_PIXEL_M = 10.0
S1_CRS = "EPSG:4326"
S1_PIXEL_M = 20.0
BLOCK = 256                # GeoTIFF tile size and rows per written window
WINDOW_COLS = 2048         # columns per written window (bounds memory on wide scenes)
GRD_LOOKS = 4              # about the equivalent number of looks of Sentinel-1 GRD
_METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class ScenePaths:
    s2_cloudy: Path
    s2_clear: Path
    s1: Path
    truth: Path   # float32 bands: cloud opacity, shadow strength (on the S2 grid)


def scene_paths(out_dir) -> ScenePaths:
    """Where `write_scene` puts (or has put) the files of a scene in `out_dir`."""
    out = Path(out_dir)
    return ScenePaths(out / "s2_cloudy.tif", out / "s2_clear.tif", out / "s1.tif",
                      out / "truth.tif")


def _windows(height: int, width: int):
    for row in range(0, height, BLOCK):
        for col in range(0, width, WINDOW_COLS):
            yield Window(col, row, min(WINDOW_COLS, width - col), min(BLOCK, height - row))


def _profile(crs, transform, width, height, count, dtype, predictor) -> dict:
    """Tiled, compressed GeoTIFF; the fastest DEFLATE level, since scenes are made often."""
    return dict(driver="GTiff", crs=crs, transform=transform, width=width, height=height,
                count=count, dtype=dtype, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                compress="deflate", zlevel=1, predictor=predictor, BIGTIFF="IF_SAFER")


def _to_dn(reflectance: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(reflectance * 10000.0), 1, 65535).astype(np.uint16)


def _s1_grid(s2_bounds):
    """A north-up EPSG:4326 grid at ~20 m that covers the S2 footprint with a small margin."""
    west, south, east, north = transform_bounds(S2_CRS, S1_CRS, *s2_bounds, densify_pts=21)
    dlat = S1_PIXEL_M / _METRES_PER_DEGREE
    dlon = dlat / math.cos(math.radians((south + north) / 2))
    west, north = west - 2 * dlon, north + 2 * dlat
    width = math.ceil((east - west) / dlon) + 2
    height = math.ceil((north - south) / dlat) + 2
    return from_origin(west, north, dlon, dlat), width, height


def write_scene(out_dir, width: int, height: int, seed: int = 0, cloud_kind: str = "mixed",
                coverage: "float | None" = None) -> ScenePaths:
    """Write s2_cloudy.tif, s2_clear.tif, s1.tif and truth.tif for a `width` x `height` S2 scene.

    The same arguments always give the same files. `cloud_kind` and `coverage` are those of
    `clouds.simulate_clouds`.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = scene_paths(out_dir)
    rng = np.random.default_rng(seed)
    landscape = Landscape.draw(rng, width, height)
    period = min(0.6 * max(width, height), 1500.0) * rng.uniform(0.7, 1.3)
    clouds = CloudField.draw(rng, height, width, kind=cloud_kind, coverage=coverage, period=period)

    s2_transform = from_origin(*S2_ORIGIN, S2_PIXEL_M, S2_PIXEL_M)
    s2 = _profile(S2_CRS, s2_transform, width, height, len(S2_BANDS), "uint16", 2)
    truth = _profile(S2_CRS, s2_transform, width, height, 2, "float32", 3)
    with rasterio.open(paths.s2_cloudy, "w", **s2) as cloudy_dst, \
            rasterio.open(paths.s2_clear, "w", **s2) as clear_dst, \
            rasterio.open(paths.truth, "w", **truth) as truth_dst:
        for dst in (cloudy_dst, clear_dst):
            dst.descriptions = S2_BANDS
        truth_dst.descriptions = ("cloud opacity", "shadow strength")
        for window in _windows(height, width):
            clear = landscape.s2_reflectance(window.row_off, window.col_off,
                                             window.height, window.width)
            sample = clouds.composite(clear, window.row_off, window.col_off)
            clear_dst.write(_to_dn(clear), window=window)
            cloudy_dst.write(_to_dn(sample.cloudy), window=window)
            truth_dst.write(np.stack([sample.cloud, sample.shadow]), window=window)

    _write_s1(paths.s1, landscape, seed, array_bounds(height, width, s2_transform))
    return paths


def _write_s1(path: Path, landscape: Landscape, seed: int, s2_bounds) -> None:
    """Render the landscape's backscatter on a 20 m UTM grid and resample it window by window.

    The resampling is done here (exact projection of every pixel centre, then bilinear) rather
    than with GDAL's warper, whose result depends in the last decibels on the source window it
    is given: windows must not show in the image.
    """
    transform, width, height = _s1_grid(s2_bounds)
    step = S1_PIXEL_M / S2_PIXEL_M
    profile = _profile(S1_CRS, transform, width, height, len(S1_BANDS), "float32", 3)
    x0, y0 = S2_ORIGIN
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = S1_BANDS
        for window in _windows(height, width):
            rows, cols = np.mgrid[window.row_off:window.row_off + window.height,
                                  window.col_off:window.col_off + window.width]
            lon, lat = transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
            x, y = warp_transform(S1_CRS, S2_CRS, lon, lat)
            # Fractional position on the 20 m UTM grid (pixel centres at integers).
            src_row = (y0 - np.asarray(y)) / S1_PIXEL_M - 0.5
            src_col = (np.asarray(x) - x0) / S1_PIXEL_M - 0.5
            first_row, first_col = math.floor(src_row.min()), math.floor(src_col.min())
            n_rows = math.floor(src_row.max()) - first_row + 2
            n_cols = math.floor(src_col.max()) - first_col + 2
            # Pixel (r, c) of the 20 m grid is centred on S2 pixel coordinate (2r + 0.5, 2c + 0.5).
            source = landscape.s1_db(first_row * step + (step - 1) / 2,
                                     first_col * step + (step - 1) / 2, n_rows, n_cols, step)
            db = _bilinear(source, src_row - first_row, src_col - first_col)
            db = db.reshape(len(S1_BANDS), window.height, window.width)
            dst.write(db + _speckle_db(window, seed), window=window)


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample bands x H x W `image` at fractional (rows, cols) inside it."""
    r0, c0 = np.floor(rows).astype(np.intp), np.floor(cols).astype(np.intp)
    fr, fc = (rows - r0).astype(np.float32), (cols - c0).astype(np.float32)
    top = image[:, r0, c0] * (1 - fc) + image[:, r0, c0 + 1] * fc
    bottom = image[:, r0 + 1, c0] * (1 - fc) + image[:, r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _speckle_db(window: Window, seed: int) -> np.ndarray:
    """Fully developed speckle of a GRD_LOOKS-look image in dB, for both bands of a window.

    The mean of L unit exponentials is the L-look gamma intensity; the uniforms come from the
    coordinate hash so the speckle does not depend on how the image is cut into windows.
    """
    rows = np.arange(window.row_off, window.row_off + window.height)
    cols = np.arange(window.col_off, window.col_off + window.width)
    bands = []
    for band in range(len(S1_BANDS)):
        product = np.ones((window.height, window.width))
        for look in range(GRD_LOOKS):
            product *= 1.0 - hash_uniform(rows, cols, seed * 16 + band * GRD_LOOKS + look)
        bands.append(10.0 * np.log10(-np.log(product) / GRD_LOOKS))
    return np.stack(bands).astype(np.float32)
