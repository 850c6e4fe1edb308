"""Writing the restored image and the gate layer so that they appear together or not at all, as
Cloud-Optimized GeoTIFFs with internal overviews that QGIS shows at any zoom at once.

Both images grow window by window in hidden temporary files beside their targets (same folder,
so the final rename is atomic on every file system), uncompressed, with their overview
levels averaged from each window as it is written (nodata ignored), so no pass over the whole
image is needed for them. Once both are complete, GDAL's COG driver copies each, with those
overviews, into its final layout (overviews before the full resolution, all headers first) and
compression, and the pair takes its real names. An error, a cancel or Ctrl-C removes the
temporary files: users never find a half-written image that looks finished.
"""
import math
import os
import shutil
import struct
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from .errors import UserError
from .partials import commit_lock, partial_path, remove_stale_partials

_BLOCK = 256
GATE_DESCRIPTION = "gate confidence (1 = clear sky, optical kept; 0 = reconstructed from SAR)"
# The final files: DEFLATE (every GIS reads it) with the predictor, level 1: about the size of
# level 6 for S2 (a few % larger) at a fraction of the time.
COG_OPTIONS = {"COMPRESS": "DEFLATE", "LEVEL": 1, "PREDICTOR": "YES", "BLOCKSIZE": _BLOCK,
               "NUM_THREADS": "ALL_CPUS", "BIGTIFF": "IF_SAFER",
               "OVERVIEW_RESAMPLING": "AVERAGE"}
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}


# The temporary files, written once block by block and read once by the COG copy, are left
# uncompressed: compressing them (ZSTD level 1 with a predictor) cost the writer thread CPU that
# inference needed on a small machine, and the copy the time to decompress (a 4 MP run: 13.3 s
# instead of 16.5 s, with the 16 MB mmap threshold, 2 cores; docs/BENCHMARK.md). The price is
# disk: the temporaries take the raw size (3.6 GB for a full S2 tile, beside the 1.3 GB final
# files) until the copy ends, which check_free_space makes sure of before anything is written.
_STREAM_OPTIONS = {"tiled": True, "blockxsize": _BLOCK, "blockysize": _BLOCK,
                   "BIGTIFF": "IF_SAFER"}


def overview_factors(height: int, width: int) -> list:
    """Reduction factors 2, 4, ... until the image fits one file tile (as GDAL's COG driver)."""
    factors, factor = [], 1
    while max(math.ceil(height / factor), math.ceil(width / factor)) > _BLOCK:
        factor *= 2
        factors.append(factor)
    return factors


def _create(temp: Path, target: Path, profile: dict):
    try:
        return rasterio.open(temp, "w", **profile)
    except RasterioIOError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"Cannot write {target} ({reason}); choose an output folder you can "
                        f"write to.") from None


# Disk a run needs, as a multiple of its outputs' raw size: the uncompressed temporaries (1),
# their overview levels (1/3) and the compressed final files (at most about 2/3 of raw for S2,
# less for the gate), which exist beside the temporaries until the commit.
DISK_NEED_FACTOR = 2.0


def check_free_space(folder: Path, raw_bytes: int) -> None:
    """Refuse, before anything is written, a run whose files cannot fit in `folder`."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:   # the folder's own checks report a missing or unwritable folder
        return
    need = int(raw_bytes * DISK_NEED_FACTOR)
    if free < need:
        raise UserError(f"The output folder {folder} has {_amount(free)} free but this run "
                        f"needs about {_amount(need)} while it writes; free some space or "
                        f"choose another folder (or a smaller area).")


def _amount(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


# What a write, close or copy that runs out of disk raises: rasterio reports some of GDAL's
# failed block writes as a bare SystemError ("Unknown GDAL Error").
_WRITE_ERRORS = (RasterioError, CPLE_BaseError, OSError, SystemError)


def _incomplete(target: Path) -> UserError:
    return UserError(f"Writing {target} did not complete; check the free disk space in "
                     f"{target.parent} and try again.")


# ---- TIFF structure: what the COG layout rules and the completeness check look at ----

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               16: 8, 17: 8, 18: 8}
_TYPE_CODES = {1: "B", 3: "H", 4: "I", 16: "Q", 6: "b", 8: "h", 9: "i", 17: "q"}


def tiff_ifds(path) -> list:
    """Every image file directory of a (Big)TIFF in file order: dicts with `offset` (of the
    IFD), `width`, `height`, `subfile` (1 for a reduced-resolution image), `tiled`, `offsets`
    and `sizes` (of its tiles or strips). Reads only the headers."""
    with open(path, "rb") as f:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None:
            raise ValueError("not a TIFF file")
        magic = struct.unpack(order + "H", head[2:4])[0]
        big = magic == 43
        if big:
            next_ifd = struct.unpack(order + "Q", head[8:16])[0]
        elif magic == 42:
            next_ifd = struct.unpack(order + "I", head[4:8])[0]
        else:
            raise ValueError("not a TIFF file")
        ifds = []
        while next_ifd:
            f.seek(next_ifd)
            count = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))[0]
            entry_size = 20 if big else 12
            raw = f.read(count * entry_size)
            tags = {}
            for i in range(count):
                entry = raw[i * entry_size:(i + 1) * entry_size]
                if big:
                    tag, kind, n = struct.unpack(order + "HHQ", entry[:12])
                    inline, value_bytes = entry[12:20], 8
                else:
                    tag, kind, n = struct.unpack(order + "HHI", entry[:8])
                    inline, value_bytes = entry[8:12], 4
                if tag not in (254, 256, 257, 273, 279, 322, 323, 324, 325) or \
                        kind not in _TYPE_CODES:
                    continue
                size = _TYPE_SIZES[kind] * n
                if size <= value_bytes:
                    data = inline[:size]
                else:
                    where = f.tell()
                    f.seek(struct.unpack(order + ("Q" if big else "I"), inline)[0])
                    data = f.read(size)
                    f.seek(where)
                tags[tag] = struct.unpack(order + _TYPE_CODES[kind] * n, data)
            ifds.append({"offset": next_ifd, "width": tags[256][0], "height": tags[257][0],
                         "subfile": tags.get(254, (0,))[0], "tiled": 324 in tags,
                         "offsets": tags.get(324, tags.get(273, ())),
                         "sizes": tags.get(325, tags.get(279, ()))})
            next_ifd = struct.unpack(order + ("Q" if big else "I"),
                                     f.read(8 if big else 4))[0]
    return ifds


def _check_complete(path: Path, target: Path) -> None:
    """Every tile of every image lies inside the file: a full disk or a file size limit cuts a
    file short, and GDAL may only log it. Reads the headers, not the pixels."""
    try:
        size = Path(path).stat().st_size
        ifds = tiff_ifds(path)
    except (OSError, ValueError, KeyError, struct.error):
        raise _incomplete(target) from None
    for ifd in ifds:
        if len(ifd["offsets"]) != len(ifd["sizes"]) or not ifd["offsets"]:
            raise _incomplete(target)
        for offset, length in zip(ifd["offsets"], ifd["sizes"]):
            if offset == 0 or length == 0 or offset + length > size:
                raise _incomplete(target)


# ---- overviews, averaged block by block ----

def _halve(sums: np.ndarray, counts: np.ndarray):
    """2 x 2 sums of the last two axes (odd sizes padded with empty pixels), as four strided
    adds: float32 is exact for the first level of 16-bit images (4 x 65535 < 2^24), float64
    above it."""
    rows, cols = counts.shape
    if rows % 2 or cols % 2:
        pad = ((0, rows % 2), (0, cols % 2))
        sums = np.pad(sums, ((0, 0),) + pad)
        counts = np.pad(counts, pad)
    work = np.float32 if sums.dtype.itemsize <= 2 and sums.dtype.kind in "iu" else np.float64
    total = sums[:, 0::2, 0::2].astype(work)
    total += sums[:, 1::2, 0::2]
    total += sums[:, 0::2, 1::2]
    total += sums[:, 1::2, 1::2]
    count = counts[0::2, 0::2].astype(np.int64)
    count += counts[1::2, 0::2]
    count += counts[0::2, 1::2]
    count += counts[1::2, 1::2]
    return total, count


class _Pyramid:
    """The overview levels of one output, each in its own temporary GeoTIFF, averaged from the
    windows written (valid pixels only). Windows must start on multiples of the largest factor
    (the engine's blocks do); otherwise the pyramid gives up and the COG driver computes it."""

    def __init__(self, base: Path, target: Path, profile: dict, fill, scratch: list):
        """Each level's file is added to `scratch` (the pair's list of files to remove) before
        it is created, so an interrupt between two levels leaves none of them behind."""
        self.height, self.width = profile["height"], profile["width"]
        self.dtype, self.fill = np.dtype(profile["dtype"]), fill
        self.paths, self.datasets = [], []
        self.factors = overview_factors(self.height, self.width)
        self.usable = bool(self.factors)
        try:
            for factor in self.factors:
                path = Path(f"{base}.ovr{factor}.tif")
                self.paths.append(path)
                scratch.append(path)
                level = dict(profile, height=math.ceil(self.height / factor),
                             width=math.ceil(self.width / factor),
                             transform=profile["transform"] * Affine.scale(
                                 self.width / math.ceil(self.width / factor),
                                 self.height / math.ceil(self.height / factor)))
                self.datasets.append(_create(path, target, level))
        except BaseException:
            self.close()
            raise

    def add(self, window: Window, data: np.ndarray, valid: np.ndarray) -> None:
        if not self.usable:
            return
        top = self.factors[-1]
        row, col, rows, cols = (int(window.row_off), int(window.col_off), int(window.height),
                                int(window.width))
        if row % top or col % top or (rows % top and row + rows != self.height) or \
                (cols % top and col + cols != self.width):
            self.usable = False
            return
        # Invalid pixels must not count. They hold the fill value, so where that is 0 they add
        # nothing and only the counts need the mask; otherwise they are zeroed in a copy.
        counts = valid
        zero_fill = self.dtype.kind in "iu" and self.fill == 0
        sums = data if zero_fill or valid.all() else \
            np.where(valid, data, np.zeros((), data.dtype))
        for factor, dataset in zip(self.factors, self.datasets):
            sums, counts = _halve(sums, counts)
            dataset.write(self._means(sums, counts),
                          window=Window(col // factor, row // factor, counts.shape[1],
                                        counts.shape[0]))

    def _means(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Rounded means, computed in one float64 array: this runs in the writer thread beside
        inference, and each temporary of a block's first level is 27 MB of a 13-band 1024 px
        block, which raised the engine's peak memory as the number of blocks grew."""
        empty = counts == 0
        means = sums.astype(np.float64)
        means /= np.where(empty, 1, counts)
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            means += 0.5
            np.floor(means, out=means)
            np.clip(means, info.min, info.max, out=means)
            # An average must not read as nodata: move it one step, as the engine does.
            clash = (means == self.fill) & ~empty
            means[clash] = self.fill + 1 if self.fill < info.max else self.fill - 1
        means[:, empty] = self.fill
        return means.astype(self.dtype)

    def set_nodata(self, value) -> None:
        for dataset in self.datasets:
            dataset.nodata = value

    def close(self) -> None:
        while self.datasets:
            self.datasets.pop().close()


def _vrt(stream: Path, pyramid: _Pyramid, profile: dict, nodata, descriptions) -> str:
    """A VRT of the streamed image whose bands carry the pyramid's levels as overviews: what
    the COG driver copies, overviews included, without computing them again."""
    gdal_type = _GDAL_TYPES[np.dtype(profile["dtype"]).name]
    srs = escape(CRS.from_user_input(profile["crs"]).to_wkt()) if profile.get("crs") else ""
    bands = []
    for band in range(1, profile["count"] + 1):
        overviews = "".join(
            f'<Overview><SourceFilename relativeToVRT="0">{escape(str(path))}</SourceFilename>'
            f'<SourceBand>{band}</SourceBand></Overview>' for path in pyramid.paths)
        nodata_xml = "" if nodata is None else f"<NoDataValue>{nodata!r}</NoDataValue>"
        description = escape(descriptions[band - 1]) if descriptions else ""
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{band}">{nodata_xml}'
            f'<Description>{description}</Description>'
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(stream))}'
            f'</SourceFilename><SourceBand>{band}</SourceBand></SimpleSource>'
            f'{overviews}</VRTRasterBand>')
    transform = ", ".join(repr(v) for v in profile["transform"].to_gdal())
    return (f'<VRTDataset rasterXSize="{profile["width"]}" rasterYSize="{profile["height"]}">'
            f'<SRS>{srs}</SRS><GeoTransform>{transform}</GeoTransform>{"".join(bands)}'
            f'</VRTDataset>')


class OutputPair:
    """The restored image and the gate layer being written; use as a context manager.

    `restored_nodata` may be None when it is not known yet: `commit` sets it once the whole
    image has been seen. `band_names` label the restored bands (B1 ... B12, B8A); the gate's
    band says what it means. Write windows that start on multiples of 2^k for the k overview
    levels of the image (the engine's blocks do) and the overviews cost one averaging per
    window; other windows still give valid files, with overviews computed at the end.
    """

    def __init__(self, out_path, gate_path, *, crs, transform, width, height, dtype, bands,
                 restored_nodata=None, band_names=None, gate_description=GATE_DESCRIPTION):
        self.targets = (Path(out_path), Path(gate_path))
        grid = dict(driver="GTiff", crs=crs, transform=transform, width=width, height=height)
        self._profiles = (
            dict(grid, count=bands, dtype=np.dtype(dtype).name, nodata=restored_nodata,
                 **_STREAM_OPTIONS),
            dict(grid, count=1, dtype="float32", nodata=np.nan, **_STREAM_OPTIONS),
        )
        self._descriptions = (list(band_names) if band_names else None, [gate_description])
        integer = np.dtype(dtype).kind in "iu"
        # What invalid pixels hold (the engine writes this there): the overviews' empty value.
        self._fills = (restored_nodata if restored_nodata is not None else
                       (0 if integer else float("nan")), float("nan"))
        self._temps = []       # the streamed images (.partial.tif): one per target
        self._scratch = []     # every other temporary file
        self._datasets = []
        self._pyramids = []
        self._token = None

    def __enter__(self):
        # Leftovers of runs that were killed (SIGKILL, a QGIS crash) before they could clean up.
        self.stale_removed = []
        folders = {}
        for target, profile in zip(self.targets, self._profiles):
            raw = profile["width"] * profile["height"] * profile["count"] * \
                np.dtype(profile["dtype"]).itemsize
            folders[target.parent] = folders.get(target.parent, 0) + raw
        for folder in folders:
            self.stale_removed += remove_stale_partials(folder)
        for folder, raw in folders.items():
            check_free_space(folder, raw)
        try:
            for target, profile in zip(self.targets, self._profiles):
                self._temps.append(partial_path(target))
                self._datasets.append(_create(self._temps[-1], target, profile))
            for temp, target, dataset, profile, names, fill in zip(
                    self._temps, self.targets, self._datasets, self._profiles,
                    self._descriptions, self._fills):
                for band, name in enumerate(names or (), start=1):
                    dataset.set_band_description(band, name)
                self._pyramids.append(_Pyramid(temp, target, profile, fill, self._scratch))
        except BaseException:
            self._discard()
            raise
        return self

    def scratch_name(self, kind: str) -> str:
        """A hidden file name beside the restored target for other temporary data of this
        pair; crash leftovers of that name are removed like the pair's own."""
        return f"{self._temps[0].name}.{kind}"

    def write(self, window, restored: np.ndarray, gate: np.ndarray) -> None:
        """Write one window of both outputs: (bands, h, w) in the output dtype and (1, h, w)
        float32, NaN where the pixel is invalid (nodata in the restored image too)."""
        restored_ds, gate_ds = self._datasets
        gate = gate.astype(np.float32, copy=False)
        try:
            restored_ds.write(restored, window=window)
            gate_ds.write(gate, window=window)
        except _WRITE_ERRORS:   # a full disk or a file size limit
            raise _incomplete(self.targets[0]) from None
        valid = np.isfinite(gate[0])
        self._pyramids[0].add(window, restored, valid)
        self._pyramids[1].add(window, gate, valid)

    def commit(self, restored_nodata=None) -> None:
        """Finish both files as COGs and give them their real names; `restored_nodata` is set
        if given."""
        if restored_nodata is not None:
            self._datasets[0].nodata = restored_nodata
            self._pyramids[0].set_nodata(restored_nodata)
        nodatas = (restored_nodata if restored_nodata is not None else
                   self._profiles[0]["nodata"], float("nan"))
        try:
            self._close()
        except _WRITE_ERRORS:   # the last blocks did not fit
            raise _incomplete(self.targets[0]) from None
        finals = []
        for temp, target, profile, pyramid, names, nodata in zip(
                self._temps, self.targets, self._profiles, self._pyramids, self._descriptions,
                nodatas):
            final = Path(f"{temp}.cog.tif")
            self._scratch.append(final)
            self._to_cog(temp, final, target, profile, pyramid, names, nodata)
            finals.append(final)
        out_target, gate_target = self.targets
        out_final, gate_final = finals
        # The pair is replaced under a lock, the old pair removed first and the restored image
        # named last: whoever stops where, the folder never holds a restored image from one run
        # beside a gate from another (at worst a gate alone, or nothing).
        with commit_lock(out_target):
            for old in (out_target, gate_target):
                old.unlink(missing_ok=True)
            os.replace(gate_final, gate_target)
            try:
                os.replace(out_final, out_target)
            except BaseException:
                gate_target.unlink(missing_ok=True)
                raise
        self._discard()

    def _to_cog(self, stream: Path, final: Path, target: Path, profile: dict,
                pyramid: _Pyramid, names, nodata) -> None:
        options = dict(COG_OPTIONS)
        source = str(stream)
        if pyramid.usable:
            vrt = Path(f"{stream}.vrt")
            self._scratch.append(vrt)
            vrt.write_text(_vrt(stream, pyramid, profile, nodata, names), encoding="utf-8")
            source = str(vrt)
            options["OVERVIEWS"] = "FORCE_USE_EXISTING"
        self._scratch += [Path(f"{final}.ovr.tmp"), Path(f"{final}.aux.xml")]
        try:
            rasterio.shutil.copy(source, str(final), driver="COG", **options)
        except _WRITE_ERRORS:   # e.g. a temporary file cut short
            raise _incomplete(target) from None
        _check_complete(final, target)

    def __exit__(self, exc_type, exc, tb):
        self._discard()

    def _close(self) -> None:
        while self._datasets:
            self._datasets.pop().close()
        for pyramid in self._pyramids:
            pyramid.close()

    def _discard(self) -> None:
        """Remove every temporary file; after a successful commit only those are left."""
        try:
            self._close()
        finally:
            for temp in self._temps + self._scratch:
                for path in (Path(temp), Path(f"{temp}.aux.xml")):
                    try:
                        path.unlink(missing_ok=True)
                    except OSError:   # best effort: never hide the error that brought us here
                        pass
            self._temps, self._scratch = [], []
