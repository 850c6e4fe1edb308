"""The engine's tile loop: reading, the network and writing overlap, and no tile runs twice.

Three threads share the work. A reader reads (and reprojects) the next rows of tiles and the
S2 pixels a block keeps, the calling thread feeds the network and blends, and a writer turns
the previous block into output pixels and writes it; GDAL, numpy and the runtimes release the
GIL while they work, so reading and writing hide behind inference. Memory stays bounded: at
most two rows of tiles wait to be inferred and one block waits to be written, whatever the
scene size.

Tiles that straddle block boundaries are computed once (core.tiling.plan_blocks) and kept in a
temporary file beside the output until the last block that blends them, so they cost disk
pages (which the page cache holds), not resident memory.
"""
import ctypes
import os
import queue
import sys
import threading
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from .errors import Cancelled
from .tiling import BlendAccumulator

# Rows of tiles read ahead of the network: one in use, one ready, one being read.
_READ_AHEAD = 0
_POLL_S = 0.1
# How much less CPU priority (niceness) the reader and writer threads take than the network's
# threads: on a machine with few cores they then use the gaps inference leaves, rather than
# stalling every parallel step of the network that waits for a descheduled thread.
IO_NICENESS = 0
# Read and write in their own threads, beside inference (False: one after the other).
OVERLAP = True


# Arrays from this size up are mapped from the OS and handed back when freed (glibc's
# M_MMAP_THRESHOLD). glibc otherwise raises that threshold to the largest array freed so far
# (up to 32 MB), after which the engine's block-sized arrays (60 MB of sums, strips of tiles)
# come from heaps that fragment across threads and grow with the number of blocks: peak memory
# then creeps up with the scene instead of staying flat. Tile-sized arrays (13 bands of a
# 512 px tile: 13.6 MB) stay below it and are reused from the heap; at 64 KB every one of them
# was faulted in page by page (with uncompressed temporaries a 4 MP run took 15.6 s at 64 KB and
# 13.3 s at 16 MB on 2 cores; docs/BENCHMARK.md).
MMAP_THRESHOLD = 16 << 20
_heap_bounded = False


def set_mmap_threshold(size: int) -> None:
    """Set glibc's M_MMAP_THRESHOLD to `size` bytes (Linux with glibc; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, size)   # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):   # not glibc
        pass


def bound_heap_growth() -> None:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD, once per process."""
    global _heap_bounded
    if not _heap_bounded:
        _heap_bounded = True
        set_mmap_threshold(MMAP_THRESHOLD)


def _lower_priority() -> None:
    """Give the calling thread IO_NICENESS less priority (Linux: niceness is per thread)."""
    if not IO_NICENESS or not hasattr(os, "setpriority") or not hasattr(threading,
                                                                         "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                  + IO_NICENESS))
    except OSError:
        pass


class TileStore:
    """Predictions of tiles that later blocks blend again, in an unnamed file (fixed slots)."""

    def __init__(self, folder: Path, name: str, bands: int, tile: int):
        self._shapes = ((bands, tile, tile), (1, tile, tile))
        self._float_bytes = (bands + 1) * tile * tile * 4
        self._slot_bytes = self._float_bytes + tile * tile
        self._tile = tile
        self._file, self._path = _unnamed_file(Path(folder), name)
        self._slots, self._free, self._next = {}, [], 0

    def put(self, key, restored: np.ndarray, gate: np.ndarray, valid: np.ndarray) -> None:
        slot = self._free.pop() if self._free else self._next
        self._next = max(self._next, slot + 1)
        self._slots[key] = slot
        self._file.seek(slot * self._slot_bytes)
        for array in (restored, gate, valid):
            self._file.write(memoryview(np.ascontiguousarray(array)).cast("B"))

    def get(self, key):
        restored, gate = (np.empty(shape, np.float32) for shape in self._shapes)
        valid = np.empty((self._tile, self._tile), bool)
        self._file.seek(self._slots[key] * self._slot_bytes)
        for array in (restored, gate, valid):
            self._file.readinto(memoryview(array).cast("B"))
        return restored, gate, valid

    def release(self, key) -> None:
        self._free.append(self._slots.pop(key))

    def close(self) -> None:
        self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


def _unnamed_file(folder: Path, name: str):
    """(file, path to remove at close or None): a file without a name where the system allows
    it (Linux O_TMPFILE), else `name`, unlinked at once where that is allowed (not Windows), so
    nothing is left behind whatever stops the run."""
    if hasattr(os, "O_TMPFILE"):
        try:
            return open(os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600), "w+b"), None
        except OSError:   # a file system without O_TMPFILE
            pass
    path = folder / name
    handle = open(path, "w+b")
    if os.name == "nt":
        return handle, path
    try:
        os.unlink(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return handle, None


class _Writer:
    """A thread that runs `work(item)` for each item handed to it, one item at a time: `put`
    waits while the previous item is still being worked on, so one block at most waits.

    An exception in the thread stops it and is raised in the caller at its next `put` or at
    `close`; `close(abort=True)` stops it after its current item and raises nothing.
    """

    def __init__(self, name: str, work):
        self._work = work
        self._inbox = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._error = None
        self._free = threading.Semaphore(1)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        _lower_priority()
        try:
            while not self._stop.is_set():
                try:
                    item = self._inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is None:
                    return
                self._work(item)
                del item
                self._free.release()
        except BaseException as exc:   # handed to the caller, who raises it
            self._error = exc

    def _check(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if not self._thread.is_alive():
            raise RuntimeError(f"the {self._thread.name} thread stopped")

    def put(self, item) -> None:
        while not self._free.acquire(timeout=_POLL_S):
            self._check()
        self._check()
        self._inbox.put(item)

    def close(self, abort: bool = False) -> None:
        """Finish what was handed over (or, with `abort`, only the current item) and stop."""
        if abort:
            self._stop.set()
            self._thread.join()
            return
        while not self._free.acquire(timeout=_POLL_S):
            self._check()
        self._check()
        self._inbox.put(None)
        self._thread.join()
        if self._error is not None:
            self._check()


def _read_jobs(blocks, tile: int, with_originals: bool):
    """What the reader reads, in the order the loop uses it: per block, each row of tiles it
    computes (one read from its first to its last tile), then the block's own S2 pixels."""
    for block in blocks:
        rows = {}
        for row, col in sorted(block.compute):
            rows.setdefault(row, []).append(col)
        for row, cols in rows.items():
            yield ("strip", row, cols[0], cols[-1] + tile - cols[0])
        if with_originals:
            yield ("original", Window(block.col0, block.row0, block.width, block.height))


class _BatchBuffers:
    """The network's input batches, stacked into arrays kept from one batch to the next.

    Every batch has the same shape (but perhaps the last); a fresh array per batch is one more
    allocation, and a batch above MMAP_THRESHOLD (four 512 px tiles: 55 MB) would be handed back
    to the OS and faulted in again page by page. Refilling is
    safe: every output of a batch is blended or copied into the TileStore before the next batch
    is stacked, so even an output that shares its input's memory (a torch network that passes a
    band through) is used up first.
    """

    def __init__(self):
        self._arrays = {}

    def stack(self, inputs) -> tuple:
        """(s2, s1) batches of the tiles' (s2, s1, valid) inputs."""
        out = []
        for part in (0, 1):
            key = (part, len(inputs))
            if key not in self._arrays:
                first = inputs[0][part]
                self._arrays[key] = np.empty((len(inputs),) + first.shape, first.dtype)
            out.append(np.stack([i[part] for i in inputs], out=self._arrays[key]))
        return tuple(out)


class _Strips:
    """The rows of tiles the reader delivers, cut into tiles as the batches need them."""

    def __init__(self, reader, tile: int):
        self._reader, self._tile, self._rows = reader, tile, {}

    def cut(self, row: int, col: int):
        if row not in self._rows:
            kind, strip_row, col0, arrays = self._reader.get()
            assert kind == "strip" and strip_row == row, (kind, strip_row, row)
            self._rows[row] = (col0, arrays)
        col0, arrays = self._rows[row]
        cut = np.s_[..., col - col0:col - col0 + self._tile]
        return tuple(array[cut] for array in arrays)

    def new_block(self) -> None:
        """Rows of tiles are read per block (each block reads only the tiles it computes)."""
        self._rows = {}

    def drop_before(self, row: int) -> None:
        for old in [r for r in self._rows if r < row]:
            del self._rows[old]


def run_blocks(blocks, *, tile: int, bands: int, batch_size: int, readers, with_originals: bool,
               infer, finish, write, store: TileStore, progress, is_cancelled) -> bool:
    """Infer, blend and write every block of `blocks` (core.tiling.plan_blocks); returns
    whether any output pixel was invalid.

    `readers`: one (read_region, read_original) pair per reader thread, each over its own
    datasets: `read_region(row, col, height, width)` -> (s2, s1, valid) model inputs,
    `read_original(window)` -> the block's S2 DN (read only `with_originals`; the raw network
    needs none). `infer(s2, s1)` -> (restored, gate) for a batch; `finish(blended, valid,
    original)` -> (output pixels, gate) of a block; `write(window, out, gate)`: both run in the
    writer thread.
    """
    def reader_of(read_region, read_original):
        def read(job):
            if job[0] == "strip":
                _, row, col, width = job
                return ("strip", row, col, read_region(row, col, tile, width))
            return ("original", None, None, read_original(job[1]))
        return read

    reads = [reader_of(*pair) for pair in readers]
    bound_heap_growth()

    def finish_and_write(item):
        window, blended, valid, original = item
        out, gate = finish(blended, valid, original)
        write(window, out, gate)

    if OVERLAP:
        reader = _JobReader(_read_jobs(blocks, tile, with_originals), reads, _READ_AHEAD)
        writer = _Writer("block writer", finish_and_write)
    else:
        reader = _InlineReader(_read_jobs(blocks, tile, with_originals), reads[0])
        writer = _InlineWriter(finish_and_write)
    total = sum(len(block.compute) for block in blocks)
    done, any_invalid = 0, False
    batches = _BatchBuffers()
    try:
        strips = _Strips(reader, tile)
        for block in blocks:
            strips.new_block()
            accumulator = BlendAccumulator(bands + 1, block.row0, block.col0, block.height,
                                           block.width, tile)
            todo = [t for t in block.tiles if t in block.compute]
            ready, next_todo = {}, 0
            for key in block.tiles:
                if key in block.compute:
                    if key not in ready:
                        if is_cancelled():
                            raise Cancelled()
                        batch = todo[next_todo:next_todo + batch_size]
                        next_todo += len(batch)
                        inputs = [strips.cut(row, col) for row, col in batch]
                        strips.drop_before(batch[-1][0])
                        restored, gate = infer(*batches.stack(inputs))
                        for tile_key, (_, _, valid), r, g in zip(batch, inputs, restored, gate):
                            ready[tile_key] = (r, g, valid)
                        done += len(batch)
                        progress(done / total, f"tile {done} of {total}")
                    restored_tile, gate_tile, valid = ready.pop(key)
                    if key in block.keep:
                        store.put(key, restored_tile, gate_tile, valid)
                else:
                    restored_tile, gate_tile, valid = store.get(key)
                    if key in block.release:
                        store.release(key)
                accumulator.add(restored_tile, key[0], key[1], gate_tile)
                accumulator.mark_valid(valid, key[0], key[1])
            original = reader.get()[3] if with_originals else None
            any_invalid |= not accumulator.valid.all()
            writer.put((Window(block.col0, block.row0, block.width, block.height),
                        accumulator.result(), accumulator.valid, original))
            del accumulator, original
        writer.close()
    finally:
        _stop_all(reader, writer)
    return any_invalid


def _stop_all(reader, writer) -> None:
    """Stop the reader and writer threads and wait for them, even through a second Ctrl-C:
    the output files must not be removed while a thread still writes them."""
    interrupted = None
    for stop in (reader.close, lambda: writer.close(abort=True)):
        while True:
            try:
                stop()
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
    if interrupted is not None:
        raise interrupted


class _JobReader:
    """Threads, one per reader (each with its own datasets: GDAL handles are not thread-safe),
    that run the jobs in turn and hand their results back in job order; at most `ahead`
    results wait beyond those being read."""

    def __init__(self, jobs, reads, ahead: int):
        self._jobs = list(jobs)
        self._capacity = ahead + len(reads)
        self._next_job = self._next_out = 0
        self._results = {}
        self._stop = False
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._run, args=(read,), daemon=True,
                                          name=f"tile reader {i}")
                         for i, read in enumerate(reads)]
        for thread in self._threads:
            thread.start()

    def _run(self, read):
        _lower_priority()
        while True:
            with self._cond:
                while not self._stop and self._next_job < len(self._jobs) and \
                        self._next_job >= self._next_out + self._capacity:
                    self._cond.wait(_POLL_S)
                if self._stop or self._next_job >= len(self._jobs):
                    return
                index = self._next_job
                self._next_job += 1
            try:
                result = ("ok", read(self._jobs[index]))
            except BaseException as exc:   # handed to the caller, who raises it
                result = ("error", exc)
            with self._cond:
                self._results[index] = result
                self._cond.notify_all()
            if result[0] == "error":
                return

    def get(self):
        with self._cond:
            while self._next_out not in self._results:
                if not any(thread.is_alive() for thread in self._threads):
                    raise RuntimeError("the tile readers stopped")
                self._cond.wait(_POLL_S)
            kind, value = self._results.pop(self._next_out)
            self._next_out += 1
            self._cond.notify_all()
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._results.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()


class _InlineReader:
    """`_JobReader`'s interface, reading in the calling thread when asked."""

    def __init__(self, jobs, read):
        self._jobs, self._read = iter(jobs), read

    def get(self):
        return self._read(next(self._jobs))

    def close(self) -> None:
        pass


class _InlineWriter:
    """`_Writer`'s interface, writing in the calling thread."""

    def __init__(self, work):
        self._work = work

    def put(self, item) -> None:
        self._work(item)

    def close(self, abort: bool = False) -> None:
        pass
