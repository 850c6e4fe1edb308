"""The output grid: the S2 pixel grid cropped to the area of interest, and S1 brought onto it.

S1 and S2 rarely share a grid (other CRS, 10 m vs 20 m, shifted origins), but the network needs
them pixel for pixel. The S2 grid is kept as it is, so the restored image lines up with the
analyst's S2 layer exactly, and S1 is resampled onto it one window at a time through a GDAL warped
view, so no whole scene is ever in memory.
"""
import math
import os
import warnings

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from . import s2_products
from .errors import UserError
from .sensors import invalid_s1_pixels, invalid_s2_pixels

# AOI bounds within this many pixels of a pixel edge count as on it; it
# absorbs the float noise of coordinates that went through a CRS transformation.
_SNAP_TOLERANCE_PX = 1e-3
# Points per edge when transforming bounds between CRSs, so curved edges are followed.
_DENSIFY_POINTS = 21
# 36 patches of 64 x 64 px spread over the image: plenty to judge value ranges.
_SAMPLE_PATCHES = 6
_SAMPLE_PATCH_SIZE = 64


def open_raster(path, role: str):
    """Open a raster for reading, or explain in one sentence why it cannot be.

    For S2 this also takes a Sentinel-2 product as downloaded (a .SAFE folder, its .zip, its
    MTD_MSIL1C.xml, a SENTINEL2 sub-dataset name) or a folder of one file per band: they are
    read through a VRT that stacks the 13 bands on the 10 m grid (core.s2_products).
    """
    if role == "S2" and s2_products.is_product_path(path):
        return s2_products.open_product(path)
    if os.path.isdir(str(path)):
        raise UserError(f"The {role} input {path} is a folder; give the {role} image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(str(path))
    except RasterioIOError:
        if not os.path.exists(path):
            raise UserError(f"The {role} file {path} does not exist; check the path.") from None
        raise UserError(f"The {role} file {path} is not a raster GDAL can read; give a GeoTIFF "
                        f"or another GDAL format.") from None


def require_georeferencing(dataset, role: str) -> None:
    """Refuse rasters without a CRS or geotransform: they cannot be placed against each other."""
    if dataset.crs is None or dataset.transform.is_identity:
        raise UserError(f"The {role} image {dataset.name} has no georeferencing (CRS and "
                        f"geotransform); give a georeferenced GeoTIFF.")
    if not dataset.transform.is_rectilinear:
        raise UserError(f"The {role} image {dataset.name} has a rotated geotransform; warp it "
                        f"to a north-up grid first (e.g. with gdalwarp).")


def _intersect(a, b):
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def _parse_crs(text):
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise UserError(f"The AOI CRS {text!r} is not a coordinate reference system GDAL knows; "
                        f"give it as e.g. EPSG:4326.") from None


def output_window(s2, s1, aoi=None, aoi_crs=None) -> Window:
    """The S2 pixel window to restore: the AOI (or else the S1/S2 overlap) snapped to S2 pixels.

    The AOI is widened to whole S2 pixels so it is fully covered, then cut to the part both
    images cover, because outside S1 there is nothing to reconstruct clouds from.
    """
    s1_bounds = transform_bounds(s1.crs, s2.crs, *s1.bounds, densify_pts=_DENSIFY_POINTS)
    overlap = _intersect(tuple(s2.bounds), s1_bounds)
    if overlap is None:
        raise UserError(f"The S1 image {s1.name} and the S2 image {s2.name} do not overlap; "
                        f"give an S1 image of the same place.")
    area = overlap
    if aoi is not None:
        xmin, ymin, xmax, ymax = (float(v) for v in aoi)
        if not (xmin < xmax and ymin < ymax):
            raise UserError(f"The AOI {aoi} is empty; give xmin,ymin,xmax,ymax with xmin < xmax "
                            f"and ymin < ymax.")
        crs = s2.crs if aoi_crs is None else _parse_crs(aoi_crs)
        aoi_in_s2 = transform_bounds(crs, s2.crs, xmin, ymin, xmax, ymax,
                                     densify_pts=_DENSIFY_POINTS)
        area = _intersect(overlap, aoi_in_s2)
        if area is None:
            raise UserError(f"The AOI {aoi} ({crs.to_string()}) lies outside the area covered by "
                            f"both the S1 and the S2 image; draw it over the scene.")
    return _snap(area, s2)


def _snap(bounds, dataset) -> Window:
    inverse = ~dataset.transform
    xs, ys = zip(*(inverse * corner for corner in
                   ((bounds[0], bounds[1]), (bounds[0], bounds[3]),
                    (bounds[2], bounds[1]), (bounds[2], bounds[3]))))
    col0 = max(0, math.floor(min(xs) + _SNAP_TOLERANCE_PX))
    row0 = max(0, math.floor(min(ys) + _SNAP_TOLERANCE_PX))
    col1 = min(dataset.width, math.ceil(max(xs) - _SNAP_TOLERANCE_PX))
    row1 = min(dataset.height, math.ceil(max(ys) - _SNAP_TOLERANCE_PX))
    if col1 <= col0 or row1 <= row0:
        raise UserError("The AOI is smaller than one S2 pixel; draw a larger area.")
    return Window(col0, row0, col1 - col0, row1 - row0)


def spread_sample(dataset, window: Window = None, patches: int = _SAMPLE_PATCHES,
                  size: int = _SAMPLE_PATCH_SIZE) -> np.ndarray:
    """All bands of `patches` x `patches` small windows spread evenly over `window`, as
    (bands, pixels) float64 with nodata turned into NaN.

    Value-range decisions (DN offset, linear power vs dB) need only a sample. A few small
    windows touch a few file blocks, so sampling costs the same for a full 10980 px tile as for
    a chip; a decimated read of the whole window would decompress every block of it.
    """
    window = window or Window(0, 0, dataset.width, dataset.height)
    height, width = min(size, window.height), min(size, window.width)
    rows = np.unique(np.linspace(window.row_off, window.row_off + window.height - height,
                                 patches).round().astype(int))
    cols = np.unique(np.linspace(window.col_off, window.col_off + window.width - width,
                                 patches).round().astype(int))
    sample = np.concatenate([dataset.read(window=Window(col, row, width, height))
                             .reshape(dataset.count, -1) for row in rows for col in cols],
                            axis=1).astype(np.float64)
    if dataset.nodata is not None:
        sample[sample == dataset.nodata] = np.nan
    return sample


# Rows per strip when looking through a whole window for one valid pixel.
_SCAN_ROWS = 256


def pixel_size_in(dataset, crs) -> float:
    """The mean side of `dataset`'s pixels measured in the units of `crs`."""
    left, bottom, right, top = transform_bounds(dataset.crs, crs, *dataset.bounds,
                                                densify_pts=_DENSIFY_POINTS)
    return math.sqrt((right - left) / dataset.width * (top - bottom) / dataset.height)


# Zero fill around a swath is a region. A dataset that clips backscatter at 0 dB (SEN12MS-CR)
# also has bright targets at 0 in both bands, in small clusters (up to 9 px and 4 px across on
# the shared urban scenes). So a pixel that is 0 in every band is fill only where it lies in an
# all-zero square of FILL_SQUARE px, or is joined to one through such pixels (the ragged rim of
# a fill region) within FILL_REACH steps; a smaller cluster is data.
FILL_SQUARE = 7
FILL_REACH = 32
# Read around a window so that whether a pixel is fill does not depend on the window.
_FILL_HALO = FILL_SQUARE + FILL_REACH


def _box_count(mask: np.ndarray, side: int) -> np.ndarray:
    """How many pixels of each pixel's centred side×side box are set (outside counts unset)."""
    half = side // 2
    padded = np.pad(mask.astype(np.int32), ((half + 1, half), (half + 1, half)))
    table = padded.cumsum(0).cumsum(1)
    h, w = mask.shape
    return (table[side:side + h, side:side + w] - table[:h, side:side + w]
            - table[side:side + h, :w] + table[:h, :w])


def _grow(mask: np.ndarray) -> np.ndarray:
    """`mask` dilated by one pixel in all 8 directions."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    grown = mask.copy()
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            grown |= padded[dr:dr + h, dc:dc + w]
    return grown


def fill_region(missing: np.ndarray) -> np.ndarray:
    """The pixels of `missing` (no backscatter in any band) that are swath fill, not a small
    cluster of clipped bright targets: those in an all-missing FILL_SQUARE² square, and those
    joined to such a square through missing pixels within FILL_REACH steps."""
    squares = _box_count(missing, FILL_SQUARE) == FILL_SQUARE ** 2
    fill = (_box_count(squares, FILL_SQUARE) > 0) & missing
    rest = missing & ~fill
    for _ in range(FILL_REACH):
        if not rest.any():
            break
        joined = _grow(fill) & rest
        if not joined.any():
            break
        fill |= joined
        rest &= ~joined
    return fill


class S1OnS2Grid:
    """Read S1 resampled onto windows of the S2 pixel grid, as float32.

    `average` when S1 is finer than the S2 grid (every S1 pixel under an S2 pixel counts, which
    also averages speckle down), bilinear otherwise. Pixels S1 does not cover, S1 nodata, and in
    an S1 without a nodata value the zero fill outside the swath (every band exactly 0) come
    back as NaN, never as backscatter. Resampling happens in the units S1 is stored in, before
    any dB conversion.
    """

    def __init__(self, s1, s2):
        finer = pixel_size_in(s1, s2.crs) < abs(s2.transform.a * s2.transform.e) ** 0.5 * 0.99
        self.resampling = Resampling.average if finer else Resampling.bilinear
        extras = {}
        src_nodata = s1.nodata
        if src_nodata is None:
            # Zero in every band is the GRD fill value; a zero in one band only is data.
            src_nodata, extras = 0.0, {"UNIFIED_SRC_NODATA": "YES"}
        grid = dict(crs=s2.crs, transform=s2.transform, width=s2.width, height=s2.height,
                    resampling=self.resampling, nodata=np.nan, dtype="float32")
        self._vrt = WarpedVRT(s1, src_nodata=src_nodata, **grid, **extras)
        # Datasets that clip backscatter at 0 dB (SEN12MS-CR) have bright targets at 0 in both
        # bands; the zero-fill rule would punch nodata holes there. Fill is a region
        # (fill_region), so the pixels of smaller clusters are read again without the rule.
        self._unmasked = WarpedVRT(s1, **grid) if s1.nodata is None else None

    def read(self, window: Window) -> np.ndarray:
        values = self._vrt.read(window=window)
        if self._unmasked is not None:
            missing = ~np.isfinite(values).all(axis=0)
            if missing.any():
                clipped = missing & ~self._fill(window)
                if clipped.any():
                    values[:, clipped] = self._unmasked.read(window=window)[:, clipped]
        return values

    def _fill(self, window: Window) -> np.ndarray:
        """fill_region over `window`, judged with _FILL_HALO pixels around it; beyond the S2
        grid counts as fill, so a cluster touching the image's edge is not taken for data."""
        row, col = int(window.row_off), int(window.col_off)
        height, width = int(window.height), int(window.width)
        top, left = max(0, row - _FILL_HALO), max(0, col - _FILL_HALO)
        bottom = min(self._vrt.height, row + height + _FILL_HALO)
        right = min(self._vrt.width, col + width + _FILL_HALO)
        missing = np.ones((height + 2 * _FILL_HALO, width + 2 * _FILL_HALO), bool)
        around = self._vrt.read(window=Window(left, top, right - left, bottom - top))
        r0, c0 = top - row + _FILL_HALO, left - col + _FILL_HALO
        missing[r0:r0 + bottom - top, c0:c0 + right - left] = \
            ~np.isfinite(around).all(axis=0)
        return fill_region(missing)[_FILL_HALO:_FILL_HALO + height,
                                    _FILL_HALO:_FILL_HALO + width]

    def close(self) -> None:
        self._vrt.close()
        if self._unmasked is not None:
            self._unmasked.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _s2_valid(values, s2):
    return ~invalid_s2_pixels(values, s2.nodata, s2.dtypes[0])


def valid_samples(s2, s1, s1_grid: S1OnS2Grid, window: Window):
    """Samples of the valid pixels for value-range decisions, after making sure there is
    something to restore: (S2 sample (bands, n) float64, S1 sample (bands, m) float64).

    Raises a UserError when S2 or S1 has no valid pixel over `window` (or none where the other
    has one). A spread sample decides in the usual case; only when it finds no pixel valid in
    both is the whole window read, strip by strip, stopping at the first one.
    """
    s2_sample = spread_sample(s2, window)
    s2_ok = _s2_valid(s2_sample, s2)
    s1_raw = spread_sample(s1)
    s1_sample = s1_raw[:, ~invalid_s1_pixels(s1_raw, None if s1.nodata is None else np.nan)]
    if s2_ok.any() and s1_sample.size:
        for row, col, height, width in _sample_windows(window):
            part = Window(col, row, width, height)
            if (_s2_valid(s2.read(window=part), s2)
                    & np.isfinite(s1_grid.read(part)).all(axis=0)).any():
                return s2_sample[:, s2_ok], s1_sample
    any_s2 = any_s1 = False
    for row in range(window.row_off, window.row_off + window.height, _SCAN_ROWS):
        part = Window(window.col_off, row, window.width,
                      min(_SCAN_ROWS, window.row_off + window.height - row))
        dn = s2.read(window=part)
        s2_valid = _s2_valid(dn, s2)
        any_s2 |= bool(s2_valid.any())
        s1_valid = np.isfinite(s1_grid.read(part)).all(axis=0)
        any_s1 |= bool(s1_valid.any())
        both = s2_valid & s1_valid
        if both.any():
            found = dn[:, both].astype(np.float64)
            return (s2_sample[:, s2_ok] if s2_ok.any() else found), \
                (s1_sample if s1_sample.size else s1_grid.read(part)[:, both].astype(np.float64))
    area = "the area to restore"
    if not any_s2:
        raise UserError(f"The S2 image {s2.name} has no valid pixel over {area} (all nodata or "
                        f"0); there is nothing to restore, choose an image or area with data.")
    if not any_s1:
        raise UserError(f"The S1 image {s1.name} has no valid pixel over {area} (all nodata or "
                        f"0, as outside the radar swath); choose an S1 image that covers it.")
    raise UserError(f"The S1 image {s1.name} has no valid pixel where the S2 image {s2.name} "
                    f"has data over {area}; choose an S1 image whose swath covers the S2 data.")


def _sample_windows(window: Window, patches: int = _SAMPLE_PATCHES,
                    size: int = _SAMPLE_PATCH_SIZE):
    """The (row, col, height, width) patches `spread_sample` reads inside `window`."""
    height, width = min(size, window.height), min(size, window.width)
    rows = np.unique(np.linspace(window.row_off, window.row_off + window.height - height,
                                 patches).round().astype(int))
    cols = np.unique(np.linspace(window.col_off, window.col_off + window.width - width,
                                 patches).round().astype(int))
    return [(int(r), int(c), height, width) for r in rows for c in cols]
