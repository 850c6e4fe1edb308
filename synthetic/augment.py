"""Random crops, flips and 90° rotations applied identically to every array of one example.

S1, the cloudy S2, the target and the masks must stay pixel-aligned, so one draw of the random
numbers decides the transform and every array receives it. Only the dihedral group is used:
flips and 90° turns keep every pixel value and the pixel grid, whereas arbitrary rotations or
scalings would resample the data.
"""
import numpy as np


def random_window(rng: np.random.Generator, height: int, width: int, size: int):
    """(row, col) of a random `size` × `size` window inside height × width."""
    if size > height or size > width:
        raise ValueError(f"crop {size} is larger than the {height}×{width} image")
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop(arrays, row: int, col: int, size: int) -> list:
    """The same window of every array (the last two axes are rows and columns)."""
    return [a[..., row:row + size, col:col + size] for a in arrays]


def random_dihedral(arrays, rng: np.random.Generator) -> list:
    """One of the 8 flips/rotations of the square, the same for every array; contiguous copies."""
    turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        a = np.rot90(a, turns, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def random_crop_and_turn(arrays, rng: np.random.Generator, size: int) -> list:
    """A random aligned `size` crop of all arrays, then one random dihedral transform."""
    height, width = arrays[0].shape[-2:]
    if any(a.shape[-2:] != (height, width) for a in arrays):
        raise ValueError("arrays to augment together must share their last two dimensions")
    row, col = random_window(rng, height, width, size)
    return random_dihedral(crop(arrays, row, col, size), rng)
