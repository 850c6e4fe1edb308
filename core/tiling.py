"""Cutting an image into overlapping model-sized tiles and blending their predictions back.

One global tile grid covers the whole output; the engine walks it block by block, so a pixel
is always blended from the same tiles with the same weights, in the same order, whichever block
it falls in. The weights fall smoothly towards each tile's border, which hides the seams a
network leaves where its receptive field runs out of context. `plan_blocks` says which block
computes each tile (the first that needs it) and which later blocks reuse it, so no tile is
computed twice.
"""
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError

# Keeps pixels that only one tile covers (at image edges) from getting a zero weight.
_WEIGHT_FLOOR = 1e-3


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _tiles_along(length: int, tile: int, overlap: int) -> int:
    """How many tiles `tile_starts` places along an axis."""
    return 1 if length <= tile else -(-(length - tile) // (tile - overlap)) + 1


def effective_tile_size(tile: int, overlap: int, size_multiple: int, height: int, width: int,
                        margin: int = 0):
    """Check the user's tile size and overlap and fit them to the model and the image.

    The tile is rounded up to the model's size multiple, then shrunk as far as the same number
    of tiles still covers the image plus its context margin on both sides (rounded up the same
    way): the last tile of a row is flush with the image's end, and without the shrink it could
    overlap its neighbour by most of its width, computing those pixels twice for nothing (a
    2000 px image in 512 px tiles computes 28 % more pixels than in the fitted 464 px tiles).
    A small AOI thus never pays for a full tile. Returns (tile, note or None).
    """
    if tile <= 0:
        raise UserError(f"The tile size must be a positive number of pixels (got {tile}).")
    if overlap < 0:
        raise UserError(f"The tile overlap must not be negative (got {overlap}).")
    fitted = round_up(tile, size_multiple)
    if 2 * overlap >= fitted:   # wider overlaps would compute most pixels three times or more
        raise UserError(f"The tile overlap ({overlap} px) must be less than half the tile "
                        f"size ({fitted} px).")
    note = None
    if fitted != tile:
        note = (f"Rounded the tile size up from {tile} to {fitted} px, a multiple of the "
                f"model's {size_multiple}.")
    needed = 0
    for length in (height + 2 * margin, width + 2 * margin):
        count = _tiles_along(length, fitted, overlap)
        needed = max(needed, -(-(length + (count - 1) * overlap) // count))
    smallest = round_up(2 * overlap + 1, size_multiple)
    return min(fitted, max(round_up(needed, size_multiple), smallest)), note


def tile_starts(length: int, tile: int, overlap: int) -> list:
    """Offsets of the tiles along one axis: every `tile - overlap` px, the last flush with the end.

    Flushing the last tile with the image end keeps padding to images smaller than one tile.
    """
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a `height` x `width` image; offsets are relative to the image.

    With a `margin`, the grid covers the image grown by that many pixels on every side (tile
    offsets may be negative), so the image's own edge never falls on a tile's edge, where a
    convolutional network sees zero padding instead of context and leaves a coloured rim.
    """

    height: int
    width: int
    tile: int
    overlap: int
    margin: int = 0

    @property
    def rows(self):
        return [start - self.margin
                for start in tile_starts(self.height + 2 * self.margin, self.tile, self.overlap)]

    @property
    def cols(self):
        return [start - self.margin
                for start in tile_starts(self.width + 2 * self.margin, self.tile, self.overlap)]

    def tiles_touching(self, row0: int, col0: int, height: int, width: int) -> list:
        """(row, col) offsets of every tile that overlaps the given block of the image."""
        return [(r, c) for r in self.rows if r < row0 + height and r + self.tile > row0
                for c in self.cols if c < col0 + width and c + self.tile > col0]


def reflect_pad(array: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Reflect-pad the last two axes of an array (bands, rows, cols) or (rows, cols).

    Reflection keeps image statistics at the padded border, where constant padding would show
    the network a hard edge it could bleed into the real pixels. A one-pixel-wide axis has
    nothing to reflect and repeats its pixel instead.
    """
    if not (top or bottom or left or right):
        return array
    lead = [(0, 0)] * (array.ndim - 2)
    rows, cols = array.shape[-2:]
    array = np.pad(array, lead + [(top, bottom), (0, 0)], mode="reflect" if rows > 1 else "edge")
    return np.pad(array, lead + [(0, 0), (left, right)], mode="reflect" if cols > 1 else "edge")


def blend_window(tile: int) -> np.ndarray:
    """A tile x tile raised-cosine weight (float32), highest at the centre, never zero."""
    ramp = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    ramp = _WEIGHT_FLOOR + (1 - _WEIGHT_FLOOR) * ramp
    return np.outer(ramp, ramp).astype(np.float32)


class BlendAccumulator:
    """Weighted sums of tile predictions over one output block, and which of its pixels had
    valid inputs.

    All bands share one weight sum, accumulated in the same order as the weighted values, so a
    band of ones (a clear-sky gate) blends to exactly 1 wherever tiles overlap.

    Each weighted plane goes through one scratch array instead of a fresh temporary per plane
    and tile: where such arrays are handed straight back to the OS (a low glibc mmap threshold)
    every temporary is faulted in again page by page, which made blending four times slower.
    """

    def __init__(self, bands: int, row0: int, col0: int, height: int, width: int, tile: int):
        self.row0, self.col0, self.height, self.width = row0, col0, height, width
        self.window = blend_window(tile)
        self.total = np.zeros((bands, height, width), np.float32)
        self.weight = np.zeros((height, width), np.float32)
        self.valid = np.zeros((height, width), bool)
        self._scratch = np.empty((tile, tile), np.float32)

    def _overlap(self, row: int, col: int, rows: int, cols: int):
        """(slices into the tile, slices into the block) where a rows x cols tile placed at image
        offset (row, col) meets the block, or None."""
        r0, c0 = max(row, self.row0), max(col, self.col0)
        r1, c1 = min(row + rows, self.row0 + self.height), min(col + cols, self.col0 + self.width)
        if r0 >= r1 or c0 >= c1:
            return None
        return (np.s_[r0 - row:r1 - row, c0 - col:c1 - col],
                np.s_[r0 - self.row0:r1 - self.row0, c0 - self.col0:c1 - self.col0])

    def add(self, prediction: np.ndarray, row: int, col: int, *more: np.ndarray) -> None:
        """Add a (bands, tile, tile) prediction whose tile starts at image offset (row, col).

        The bands may come in several arrays (`prediction`, then `more`, e.g. the restored bands
        and the gate), which saves joining them into one copy per tile.
        """
        overlap = self._overlap(row, col, *prediction.shape[1:])
        if overlap is None:
            return
        src, dst = overlap
        weight = self.window[src]
        weighted = self._scratch[:weight.shape[0], :weight.shape[1]]
        band = 0
        for part in (prediction,) + more:
            for plane in part:
                np.multiply(plane[src], weight, out=weighted)
                target = self.total[band][dst]
                target += weighted
                band += 1
        self.weight[dst] += weight

    def mark_valid(self, valid: np.ndarray, row: int, col: int) -> None:
        """Record the (rows, cols) validity of a tile's real (unpadded) pixels."""
        overlap = self._overlap(row, col, *valid.shape)
        if overlap is not None:
            src, dst = overlap
            self.valid[dst] = valid[src]

    def result(self) -> np.ndarray:
        """The blended block, (bands, height, width) float32; every pixel must have been covered.

        Divides in place (the accumulator is spent afterwards): a block's sums are its largest
        arrays, and a copy would double the engine's peak memory.
        """
        self.total /= self.weight
        return self.total


@dataclass
class BlockPlan:
    """One output block (row0, col0, height, width) and the tiles it blends, in grid order.

    `compute`: tiles first needed here (computed here); `keep`: tiles computed here that a later
    block needs too (stored after use); `release`: stored tiles whose last block this is.
    """
    row0: int
    col0: int
    height: int
    width: int
    tiles: list
    compute: set = field(default_factory=set)
    keep: set = field(default_factory=set)
    release: set = field(default_factory=set)


def plan_blocks(grid: TileGrid, block_size: int) -> list:
    """The output's blocks in row-major order, each with its tiles and what to do with them.

    A tile that straddles block boundaries is computed once, in the first block that touches
    it, and kept until the last one has blended it: each block still blends every tile that
    touches it, in the grid's order, so the result does not depend on the block size.
    """
    blocks = []
    for row in range(0, grid.height, block_size):
        for col in range(0, grid.width, block_size):
            height, width = min(block_size, grid.height - row), min(block_size, grid.width - col)
            blocks.append(BlockPlan(row, col, height, width,
                                    grid.tiles_touching(row, col, height, width)))
    first, last = {}, {}
    for index, block in enumerate(blocks):
        for tile in block.tiles:
            first.setdefault(tile, index)
            last[tile] = index
    for index, block in enumerate(blocks):
        for tile in block.tiles:
            if first[tile] == index:
                block.compute.add(tile)
                if last[tile] > index:
                    block.keep.add(tile)
            elif last[tile] == index:
                block.release.add(tile)
    return blocks
