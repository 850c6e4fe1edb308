"""Coordinate-based fractal gradient noise (numpy only).

Generated scenes are written window by window and a 100-megapixel scene must never sit in memory,
so every random field here is a pure function of *global* pixel coordinates and a seed: any window
of a field can be computed on its own and always agrees with its neighbours. The lattice gradients
come from an integer hash of (lattice row, lattice column, seed) instead of a permutation table,
so the field is unbounded and needs no state.
"""
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Perlin gradient noise of unit-length gradients stays within about +-0.7; this brings one octave
# to roughly [-1, 1].
_OCTAVE_SCALE = 1.0 / 0.7


def hash_uniform(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) values for the integer points rows x cols (splitmix64 finaliser): white
    noise that, like the fields below, depends on the coordinates only, not on the window."""
    r = rows.astype(np.int64).astype(np.uint64)[:, None]
    c = cols.astype(np.int64).astype(np.uint64)[None, :]
    s = np.uint64(seed % (1 << 64))
    with np.errstate(over="ignore"):
        h = r * _MIX1 ^ (c + s * _GOLDEN) * _MIX2
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic ease curve: continuous second derivative, so no lattice creases."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def gradient_noise(y: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
    """One octave of 2-D Perlin gradient noise on the grid y x x (lattice units), float32.

    Evaluated separably: the y interpolation is done once per lattice column, then gathered along
    x, which costs a handful of operations per pixel instead of four full dot products.
    """
    i0 = np.floor(y).astype(np.int64)
    j0 = np.floor(x).astype(np.int64)
    fy = (y - i0)[:, None]
    # Per-pixel work is in float32 (fractions in [0, 1) lose nothing that shows).
    fx = (x - j0).astype(np.float32)[None, :]
    lat_rows = np.arange(i0.min(), i0.max() + 2)
    lat_cols = np.arange(j0.min(), j0.max() + 2)
    angle = 2.0 * np.pi * hash_uniform(lat_rows, lat_cols, seed)
    gy, gx = np.sin(angle), np.cos(angle)
    ri = i0 - lat_rows[0]
    uy = _fade(fy)
    # Per output row and lattice column: the y part of the dot products (p) and the x gradient (q),
    # both already interpolated between the two lattice rows around the pixel.
    p = ((1.0 - uy) * gy[ri] * fy + uy * gy[ri + 1] * (fy - 1.0)).astype(np.float32)
    q = ((1.0 - uy) * gx[ri] + uy * gx[ri + 1]).astype(np.float32)
    cj = j0 - lat_cols[0]
    ux = _fade(fx)
    left = p[:, cj] + q[:, cj] * fx
    right = p[:, cj + 1] + q[:, cj + 1] * (fx - np.float32(1.0))
    return left + ux * (right - left)


def fractal_noise(height: int, width: int, *, period: float, seed: int, octaves: int = 6,
                  roughness: float = 0.5, row_off: float = 0.0, col_off: float = 0.0,
                  step: float = 1.0) -> np.ndarray:
    """Fractal (fBm) noise for the window of `height` x `width` pixels at (row_off, col_off).

    `period` is the wavelength of the coarsest octave in pixels; each further octave halves it and
    its amplitude is multiplied by `roughness`. Values are roughly in [-1, 1] (about zero mean).
    `step` samples every step-th pixel, so a coarse preview of a huge field (e.g. to find the
    threshold that gives a cloud coverage) costs little and matches the full-resolution field.
    """
    y = row_off + np.arange(height, dtype=np.float64) * step
    x = col_off + np.arange(width, dtype=np.float64) * step
    total = np.zeros((height, width), dtype=np.float32)
    amplitude, norm, wavelength = 1.0, 0.0, float(period)
    for octave in range(octaves):
        total += np.float32(amplitude) * gradient_noise(y / wavelength, x / wavelength,
                                                        seed * 131 + octave)
        norm += amplitude
        amplitude *= roughness
        wavelength /= 2.0
    total *= np.float32(_OCTAVE_SCALE / norm)
    return total
