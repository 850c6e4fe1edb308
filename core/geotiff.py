"""Writing the restored image and the gate layer so that they appear together or not at all.

Both GeoTIFFs grow window by window in hidden temporary files beside their targets (same folder,
so the final rename is atomic on every file system) and take their real names only once both
are complete. An error, a cancel or Ctrl-C removes the temporary files: users never find a
half-written image that looks finished.
"""
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError

from .errors import UserError
from .partials import commit_lock, partial_path, remove_stale_partials

_BLOCK = 256


def _creation_options(dtype) -> dict:
    """Tiled, compressed GeoTIFF settings that QGIS pans quickly and writes without a long stall.

    Horizontal differencing suits integers, the floating-point predictor suits floats. DEFLATE
    level 1 compresses S2 about as well as the default level 6 (3 % larger here) in a quarter
    of the time, which otherwise dominated a run with a fast model.
    """
    predictor = 3 if np.dtype(dtype).kind == "f" else 2
    return {"tiled": True, "blockxsize": _BLOCK, "blockysize": _BLOCK, "compress": "deflate",
            "zlevel": 1, "predictor": predictor, "num_threads": "ALL_CPUS",
            "BIGTIFF": "IF_SAFER"}


def _temporary_beside(target: Path) -> Path:
    """A hidden, unique name in the target's folder (so the final rename stays atomic) that
    names the writing process, so a later run can tell a crash leftover (core.partials)."""
    return partial_path(target)


def _create(temp: Path, target: Path, profile: dict):
    try:
        return rasterio.open(temp, "w", **profile)
    except RasterioIOError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"Cannot write {target} ({reason}); choose an output folder you can "
                        f"write to.") from None


def _verify_readable(path: Path, target: Path) -> None:
    """Read a finished file back, block by block, before it takes its real name.

    GDAL compresses and writes most blocks when the file is closed, and reports a failure there
    (a full disk, a file size limit) only as a logged message: reading every block back is the
    one dependable proof that the file is complete. It costs a decompression, small next to
    the inference that produced the data.
    """
    try:
        with rasterio.open(path) as dataset:
            for _, window in dataset.block_windows(1):
                dataset.read(window=window)
    except RasterioIOError:
        raise UserError(f"Writing {target} did not complete (the file does not read back); "
                        f"check the free disk space in {target.parent} and try again.") from None


class OutputPair:
    """The restored image and the gate layer being written; use as a context manager.

    `restored_nodata` may be None when it is not known yet: `commit` sets it once the whole
    image has been seen.
    """

    def __init__(self, out_path, gate_path, *, crs, transform, width, height, dtype, bands,
                 restored_nodata=None):
        self.targets = (Path(out_path), Path(gate_path))
        grid = dict(driver="GTiff", crs=crs, transform=transform, width=width, height=height)
        self._profiles = (
            dict(grid, count=bands, dtype=np.dtype(dtype).name, nodata=restored_nodata,
                 **_creation_options(dtype)),
            dict(grid, count=1, dtype="float32", nodata=np.nan, **_creation_options(np.float32)),
        )
        self._temps = []
        self._datasets = []

    def __enter__(self):
        # Leftovers of runs that were killed (SIGKILL, a QGIS crash) before they could clean up.
        self.stale_removed = []
        for folder in dict.fromkeys(target.parent for target in self.targets):
            self.stale_removed += remove_stale_partials(folder)
        try:
            for target, profile in zip(self.targets, self._profiles):
                self._temps.append(_temporary_beside(target))
                self._datasets.append(_create(self._temps[-1], target, profile))
        except BaseException:
            self._discard()
            raise
        return self

    def write(self, window, restored: np.ndarray, gate: np.ndarray) -> None:
        """Write one window of both outputs: (bands, h, w) in the output dtype and (1, h, w)."""
        restored_ds, gate_ds = self._datasets
        restored_ds.write(restored, window=window)
        gate_ds.write(gate.astype(np.float32, copy=False), window=window)

    def commit(self, restored_nodata=None) -> None:
        """Finish both files and give them their real names; `restored_nodata` is set if given."""
        if restored_nodata is not None:
            self._datasets[0].nodata = restored_nodata
        self._close()
        for temp, target in zip(self._temps, self.targets):
            _verify_readable(temp, target)
        out_target, gate_target = self.targets
        out_temp, gate_temp = self._temps
        # The pair is replaced under a lock, the old pair removed first and the restored image
        # named last: whoever stops where, the folder never holds a restored image from one run
        # beside a gate from another (at worst a gate alone, or nothing).
        with commit_lock(out_target):
            for old in (out_target, gate_target):
                old.unlink(missing_ok=True)
            os.replace(gate_temp, gate_target)
            try:
                os.replace(out_temp, out_target)
            except BaseException:
                gate_target.unlink(missing_ok=True)
                raise
        self._temps = []

    def __exit__(self, exc_type, exc, tb):
        self._discard()

    def _close(self) -> None:
        while self._datasets:
            self._datasets.pop().close()

    def _discard(self) -> None:
        """Remove whatever was not committed; a no-op after a successful commit."""
        try:
            self._close()
        finally:
            for temp in self._temps:
                try:
                    temp.unlink(missing_ok=True)
                except OSError:   # best effort: never hide the error that brought us here
                    pass
            self._temps = []
