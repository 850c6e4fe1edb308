"""The one entry point every face calls: remove clouds from an S2 image with an S1 image.

Everything a user can get wrong is checked before the first tile is computed, so a bad input
costs seconds, not a half-finished hour. The output is then computed in blocks over one global
tile grid: memory depends on the block and tile sizes only, never on the scene, and every pixel
is blended from the same tiles whichever block it lies in (a tile that straddles blocks is
computed once and kept for the next; reading, inference and writing overlap: core.pipeline).
"""
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import rasterio
from rasterio.windows import Window

from .backends import available_cores, create_backend
from .errors import UserError
from .geotiff import OutputPair
from .keep_clear import KEEP_FULL, KEEP_NONE, keep_clear, keep_weight
from .grid import S1OnS2Grid, open_raster, output_window, require_georeferencing, valid_samples
from .model_spec import load_spec, resolve_model
from .sensors import (check_s1_bands, check_s2_bands, denormalise_s2, invalid_s2_pixels,
                      is_linear_power, normalise_s1, normalise_s2, resolve_s2_offset)
from .pipeline import TileStore, run_blocks
from .tiling import TileGrid, effective_tile_size, plan_blocks, reflect_pad

# Output block side in pixels: a multiple of the GeoTIFF's 256-px tiles, so every write fills
# whole file tiles, and of 2^k for the overview levels the writer derives from each block (a
# full S2 tile has five). Tiles straddling blocks are computed once (core.pipeline), so the
# block size sets memory only: about 60 MB of float32 sums (14 x 1024 x 1024) per block, two
# blocks at a time (one blended, one written), whatever the scene size.
BLOCK_SIZE = 1024
# On the CPU an inference call holds at most this many tile pixels (four 256 px tiles): larger
# calls run no faster there, and the runtime's working memory grows with the call.
CPU_BATCH_PIXELS = 4 * 256 * 256
# GDAL's block cache defaults to 5 % of RAM and, fed a whole scene window by window, fills it all
# (1.8 GB peak instead of 1.0 GB on a 16 MP scene); every block is read about once, so a small
# cache costs little speed. It fills only on scenes larger than it, so its size is also how
# much peak memory grows from a small scene to a full tile. 32 MB still holds the input blocks
# that consecutive rows of tiles share and one output block's dirty file tiles: against 64 MB
# the peak of a 40 MP run fell from 949 to 884 MB and a 4 MP run's stayed at 790, in the same
# wall time (paired 4 MP runs: 0.99x); 16 MB took 3 % longer. docs/BENCHMARK.md. A process
# that already started GDAL (QGIS) keeps its own setting.
GDAL_CACHE_MB = 32
GEOTIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class RemovalRequest:
    """What to restore and how; see docs/ARCHITECTURE.md for each field."""
    s2_path: str
    s1_path: str
    out_path: str
    gate_path: Optional[str] = None
    aoi: Optional[tuple] = None
    aoi_crs: Optional[str] = None
    model: str = "default"
    backend: str = "auto"
    device: str = "auto"
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    s2_offset: object = "auto"
    threads: Optional[int] = None
    batch_size: int = 4
    raw_network: bool = False
    # Scene adaptation (adaptation/, above the engine, which never adapts itself):
    adapt: bool = False
    adapt_seconds: Optional[float] = None   # None: adaptation's default budget
    adapt_steps: Optional[int] = None       # step cap; None: adaptation's default
    seed: int = 0
    save_adapted: Optional[str] = None


@dataclass
class RemovalResult:
    out_path: str
    gate_path: str
    width: int
    height: int
    seconds: float
    backend: str
    device: str
    model_name: str
    messages: list = field(default_factory=list)
    adaptation: object = None   # adaptation.scene.Adaptation when adaptation was asked for
    tile_size: Optional[int] = None   # the tile side the network ran on (fitted to the image)

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def default_gate_path(out_path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_gate.tif")


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def _check_output_paths(out: Path, gate: Path, inputs) -> None:
    for path, what in ((out, "output"), (gate, "gate output")):
        try:
            _check_output_path(path, what, inputs)
        except OSError as exc:   # e.g. a name too long for the file system
            raise UserError(f"The {what} path {path} cannot be used ({exc.strerror}); choose "
                            f"another path.") from None
    if _same_file(out, gate):
        raise UserError(f"The gate output path is the same file as the restored output ({out}); "
                        f"give them different names.")


def _check_output_path(path: Path, what: str, inputs) -> None:
    if path.is_dir():
        raise UserError(f"The {what} path {path} is a folder; give a file name such as "
                        f"{path / 'restored.tif'}.")
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise UserError(f"The {what} path {path} must end in .tif, as the results are written "
                        f"as GeoTIFF; name it like {path.with_suffix('.tif').name}.")
    if not path.parent.is_dir():
        raise UserError(f"The folder {path.parent} for the {what} does not exist (or is not a "
                        f"folder); create it or choose another path.")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"The folder {path.parent} is not writable; choose an output folder you "
                        f"can write to.")
    for source, role in inputs:
        if _same_file(path, source):
            raise UserError(f"The {what} path {path} is the {role} input; choose another file "
                            f"name so the input is not overwritten.")


def _input_files(request: RemovalRequest, s2) -> list:
    """(path, role) of every input file an output must not overwrite, product bands included."""
    files = [(Path(request.s2_path), "S2"), (Path(request.s1_path), "S1")]
    return files + [(Path(path), "S2") for path in getattr(s2, "band_files", ())]


# One definition of an S2 pixel without observation, shared with the sampling (core.sensors).
_invalid_s2_mask = invalid_s2_pixels


def _nodata_or_default(nodata, dtype):
    """The S2 nodata value, or the L1C convention (0; NaN for float images) when it has none."""
    if nodata is not None:
        return nodata
    return 0 if np.dtype(dtype).kind in "iu" else np.nan


def _fill(values: np.ndarray, invalid: np.ndarray) -> None:
    """Replace invalid pixels, in place, by each band's mean over the valid ones (0 if none).

    The network must not see NaN or a nodata sentinel; a plausible flat value keeps it from
    inventing structure at the edge of a nodata area. Those pixels are written as nodata anyway.
    """
    if not invalid.any():
        return
    valid = ~invalid
    for band in values:
        band[invalid] = band[valid].mean() if valid.any() else 0.0


@dataclass
class _Scene:
    """Everything the tile loop needs to read model inputs for a window of the output."""
    s2: object
    s1_grid: S1OnS2Grid
    window: Window
    offset: int
    s1_linear: bool
    s2_scale: float
    s1_db_range: tuple
    raw_network: bool = False
    keep_levels: tuple = (KEEP_NONE, KEEP_FULL)   # the model's (core.model_spec)

    def read_original(self, window: Window) -> np.ndarray:
        """The S2 DN of `window` (relative to the output) as stored, for keeping clear pixels."""
        return self.s2.read(window=Window(self.window.col_off + window.col_off,
                                          self.window.row_off + window.row_off,
                                          window.width, window.height))

    def read_region(self, row: int, col: int, height: int, width: int):
        """Model inputs for a region at output offset (row, col), and which pixels are valid.

        The region may reach past the output window (the grid's context margin): pixels there
        are read from the image where it has them, so an AOI edge is restored with real context,
        and mirrored beyond the image's own edge. Only pixels inside the image can be valid.
        """
        top, left = self.window.row_off + row, self.window.col_off + col
        row0, col0 = max(top, 0), max(left, 0)
        row1, col1 = min(top + height, self.s2.height), min(left + width, self.s2.width)
        window = Window(col0, row0, col1 - col0, row1 - row0)
        dn = self.s2.read(window=window)
        s2_invalid = _invalid_s2_mask(dn, self.s2.nodata)
        s2 = normalise_s2(dn, self.offset, self.s2_scale)
        s1_raw = self.s1_grid.read(window)
        s1_invalid = ~np.isfinite(s1_raw).all(axis=0)
        s1 = normalise_s1(s1_raw, self.s1_linear, self.s1_db_range)
        _fill(s2, s2_invalid)
        _fill(s1, s1_invalid)
        pads = (row0 - top, top + height - row1, col0 - left, left + width - col1)
        valid = np.pad(~(s2_invalid | s1_invalid), ((pads[0], pads[1]), (pads[2], pads[3])))
        return reflect_pad(s2, *pads), reflect_pad(s1, *pads), valid


def _restore(scene: _Scene, grid: TileGrid, backend, writer: OutputPair, batch_size, progress,
             is_cancelled, more_scenes=()) -> bool:
    """Run the model over every block and write it; returns whether any pixel was invalid.

    core.pipeline overlaps reading, inference and writing, and computes every tile once;
    `more_scenes` (copies of `scene` over their own datasets) read in threads of their own.
    """
    blocks = plan_blocks(grid, BLOCK_SIZE)
    if backend.device == "cpu":   # larger calls gain nothing on a CPU but runtime memory
        batch_size = max(1, min(batch_size, CPU_BATCH_PIXELS // (grid.tile * grid.tile)))
    # Read once here: the writer thread must not query the dataset the reader thread reads.
    dtype, nodata = np.dtype(scene.s2.dtypes[0]), scene.s2.nodata
    store = TileStore(writer.targets[0].parent, writer.scratch_name("tiles"), scene.s2.count,
                      grid.tile)
    try:
        return run_blocks(
            blocks, tile=grid.tile, bands=scene.s2.count, batch_size=batch_size,
            readers=[(s.read_region, s.read_original) for s in (scene, *more_scenes)],
            with_originals=not scene.raw_network, infer=backend.run,
            finish=lambda blended, valid, original: _block_outputs(
                scene, blended, valid, original, dtype=dtype, nodata=nodata),
            write=writer.write, store=store, progress=progress, is_cancelled=is_cancelled)
    finally:
        store.close()


def reader_threads(device: str, cores: int) -> int:
    """How many threads read and reproject the inputs. On the CPU one: the cores are busy with
    the network. With a GPU the network waits for its inputs, so about a third of the cores
    (up to 4) read in parallel."""
    return 1 if device != "cuda" else max(1, min(4, cores // 3))


def _scene_copy(request: RemovalRequest, scene: _Scene, stack: ExitStack) -> _Scene:
    """`scene` over datasets of its own, for another reader thread."""
    s2 = stack.enter_context(open_raster(request.s2_path, "S2"))
    s1 = stack.enter_context(open_raster(request.s1_path, "S1"))
    return replace(scene, s2=s2, s1_grid=stack.enter_context(S1OnS2Grid(s1, s2)))


def _block_outputs(scene: _Scene, blended: np.ndarray, valid: np.ndarray,
                   original: Optional[np.ndarray] = None, *, dtype=None, nodata="unset"):
    """A blended block (restored bands, then the gate) -> S2 DN and gate, with nodata filled in.

    With the block's `original` S2 DN, clear pixels are kept (core.keep_clear): where the gate
    is confident the sky is clear the input pixel is written unchanged. `dtype` and `nodata`
    (the S2's) may be given, so that another thread need not ask the dataset.
    """
    dtype = np.dtype(scene.s2.dtypes[0] if dtype is None else dtype)
    nodata = scene.s2.nodata if nodata == "unset" else nodata
    out = np.empty(blended[:-1].shape, dtype)
    gate = np.clip(blended[-1:], 0, 1)
    weight = None if original is None else keep_weight(gate[0], *scene.keep_levels)
    subsets = None
    if weight is not None and (dtype.kind in "iu" or dtype == np.float32):
        # keep_clear leaves a pixel of weight 0 as restored and takes one of weight 1 from the
        # original, bit for bit: mix only the pixels in between (a thin band along cloud
        # edges), copy the kept ones, and skip the arithmetic on all the rest.
        kept = weight >= 1.0
        mixed = (weight > 0) & ~kept
        subsets = kept, mixed, weight[mixed]
    for band, values in enumerate(blended[:-1]):   # band by band: no whole-block float copy
        out[band] = denormalise_s2(values, scene.offset, dtype, scene.s2_scale)
        if subsets is not None:
            kept, mixed, mixed_weight = subsets
            if mixed_weight.size:
                out[band][mixed] = keep_clear(out[band][mixed], original[band][mixed],
                                              mixed_weight)
            np.copyto(out[band], original[band], where=kept)
        elif weight is not None:
            out[band] = keep_clear(out[band], original[band], weight)
    if nodata is not None and dtype.kind in "iu":
        # A valid pixel must not read as nodata: move it one DN away.
        out[out == nodata] = nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
    invalid = ~valid
    out[:, invalid] = _nodata_or_default(nodata, dtype)
    gate[:, invalid] = np.nan
    return out, gate


def _open_scene(request: RemovalRequest, spec, stack: ExitStack, messages: list,
                check_outputs: Callable = lambda s2: None) -> _Scene:
    """Open and check both inputs, find the output window, decide the S2 offset and the S1
    units, and set up S1's reprojection: everything needed to read model inputs anywhere in
    the output. `check_outputs` runs after the inputs' own checks, before any pixel is read."""
    # One GDAL environment for the run; it also routes GDAL's own error chatter to logging
    # instead of stderr, where the faces print only the one-sentence message.
    # (rasterio hands GDAL_CACHEMAX to GDALSetCacheMax64, in bytes: a bare 128 was 128 bytes,
    # no cache at all, which decoded every JPEG2000 tile of a product once per strip, 3.7x.)
    stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20))
    s2 = stack.enter_context(open_raster(request.s2_path, "S2"))
    s1 = stack.enter_context(open_raster(request.s1_path, "S1"))
    check_s2_bands(s2, spec.s2_bands)
    check_s1_bands(s1, spec.s1_bands)
    require_georeferencing(s2, "S2")
    require_georeferencing(s1, "S1")
    check_outputs(s2)
    window = output_window(s2, s1, request.aoi, request.aoi_crs)
    s1_grid = stack.enter_context(S1OnS2Grid(s1, s2))
    if s1_grid.resampling.name == "average":
        messages.append("The S1 image is finer than the S2 grid; averaged it onto S2 pixels.")
    # Refuses inputs with nothing to restore; samples only valid pixels for what follows.
    s2_sample, s1_sample = valid_samples(s2, s1, s1_grid, window)
    offset, note = resolve_s2_offset(request.s2_offset, s2_sample,
                                     np.ones(s2_sample.shape[1:], bool), s2.tags(), s2.name)
    messages.append(note)
    s1_linear = is_linear_power(s1_sample)
    if s1_linear:
        messages.append("The S1 image looks like linear power; converted it to dB.")
    return _Scene(s2, s1_grid, window, offset, s1_linear, spec.s2_scale, spec.s1_db_range,
                  request.raw_network, (spec.keep_none, spec.keep_full))


@contextmanager
def open_scene(request: RemovalRequest):
    """The request's inputs as the network sees them, for tools above the engine (scene
    adaptation): yields an object with `height`, `width` (the output window), `messages` and
    `read(row, col, height, width)` -> (s2, s1, valid) on the network scale. Same checks and
    the same reading code as `remove_clouds`."""
    spec = load_spec(resolve_model(request.model))
    messages = []
    with ExitStack() as stack:
        scene = _open_scene(request, spec, stack, messages)
        yield SceneView(scene, messages)


@dataclass
class SceneView:
    scene: _Scene
    messages: list

    @property
    def height(self) -> int:
        return self.scene.window.height

    @property
    def width(self) -> int:
        return self.scene.window.width

    def read(self, row: int, col: int, height: int, width: int):
        return self.scene.read_region(row, col, height, width)


def remove_clouds(request: RemovalRequest, progress: Optional[Callable] = None,
                  is_cancelled: Optional[Callable] = None) -> RemovalResult:
    """Restore the S2 image of `request` and write the restored image and the gate layer.

    `progress(fraction, message)` is called as tiles complete; `is_cancelled()` is polled between
    batches and a True makes the run raise `Cancelled` with nothing left on disk.
    """
    started = time.perf_counter()
    progress = progress or (lambda fraction, message: None)
    is_cancelled = is_cancelled or (lambda: False)
    if request.batch_size < 1:
        raise UserError(f"The batch size must be at least 1 (got {request.batch_size}).")
    if request.adapt:
        raise UserError("Scene adaptation runs above the engine: call "
                        "sar_cloud_removal.adaptation.remove_clouds with this request.")
    out_path = Path(request.out_path)
    gate_path = Path(request.gate_path) if request.gate_path else default_gate_path(out_path)
    files = resolve_model(request.model)
    spec = load_spec(files)
    messages = []
    with ExitStack() as stack:
        scene = _open_scene(request, spec, stack, messages,
                            lambda s2: _check_output_paths(
                                out_path, gate_path, _input_files(request, s2)))
        s2, window = scene.s2, scene.window
        overlap = spec.overlap if request.overlap is None else request.overlap
        margin = overlap // 2   # context beyond the output's edges: see TileGrid
        tile, note = effective_tile_size(
            spec.tile_size if request.tile_size is None else request.tile_size, overlap,
            spec.size_multiple, window.height, window.width, margin)
        if note:
            messages.append(note)
        grid = TileGrid(window.height, window.width, tile, overlap, margin)

        progress(0.0, "loading the model")
        backend = create_backend(files, spec, backend=request.backend, device=request.device,
                                 threads=request.threads)
        stack.callback(backend.close)
        transform = s2.window_transform(window)
        writer = stack.enter_context(OutputPair(
            out_path, gate_path, crs=s2.crs, transform=transform, width=window.width,
            height=window.height, dtype=s2.dtypes[0], bands=s2.count, restored_nodata=s2.nodata,
            band_names=spec.s2_bands))
        if writer.stale_removed:
            messages.append(f"Removed {len(writer.stale_removed)} temporary file(s) that killed "
                            f"runs had left in the output folder.")
        more_scenes = [_scene_copy(request, scene, stack) for _ in range(
            reader_threads(backend.device, request.threads or available_cores()) - 1)]
        any_invalid = _restore(scene, grid, backend, writer, request.batch_size, progress,
                               is_cancelled, more_scenes)
        messages += backend.messages   # read after the run: a GPU fallback may happen midway
        restored_nodata = _nodata_or_default(s2.nodata, s2.dtypes[0])
        if any_invalid:
            messages.append(f"Pixels without valid S1 or S2 data are written as nodata "
                            f"({restored_nodata}).")
        if request.raw_network:
            messages.append("Wrote the network's output everywhere (raw network): clear pixels "
                            "were not kept.")
        writer.commit(restored_nodata if any_invalid and s2.nodata is None else None)
        backend_name, device = backend.name, backend.device
    progress(1.0, "done")
    return RemovalResult(out_path=str(out_path), gate_path=str(gate_path), width=window.width,
                         height=window.height, seconds=time.perf_counter() - started,
                         backend=backend_name, device=device, model_name=spec.name,
                         messages=messages, tile_size=tile)
