"""A procedural landscape: land-cover classes with plausible Sentinel-2 and Sentinel-1 signatures.

Generated scenes need ground that looks and behaves like the real thing for both sensors: the
network must find in the SAR what it cannot see through cloud, so each class has an optical
spectrum and a backscatter that agree. Classes come from smooth noise (a "terrain" field puts
water in the lows and snow on the highest peaks, a "land use" field splits the rest into urban,
vegetation and bare soil), and two finer fields add vegetation vigour and grain. All fields are
functions of global S2 pixel coordinates (see `noise`), so any window can be rendered alone.
"""
from dataclasses import dataclass

import numpy as np

from .noise import fractal_noise

WATER, VEGETATION, BARE_SOIL, URBAN, SNOW = range(5)

# Top-of-atmosphere L1C reflectance per class, bands B1 ... B12 (B10 sees almost no ground).
S2_SPECTRA = np.array([
    [0.110, 0.085, 0.060, 0.040, 0.035, 0.030, 0.028, 0.025, 0.022, 0.008, 0.002, 0.012, 0.008],
    [0.095, 0.070, 0.080, 0.045, 0.090, 0.220, 0.280, 0.300, 0.320, 0.100, 0.004, 0.170, 0.080],
    [0.120, 0.110, 0.130, 0.160, 0.190, 0.210, 0.230, 0.240, 0.260, 0.080, 0.005, 0.320, 0.250],
    [0.130, 0.120, 0.120, 0.130, 0.140, 0.150, 0.160, 0.170, 0.180, 0.060, 0.004, 0.200, 0.170],
    [0.600, 0.600, 0.580, 0.560, 0.550, 0.540, 0.530, 0.500, 0.480, 0.300, 0.020, 0.080, 0.060],
], dtype=np.float32)
# Mean C-band backscatter (VV, VH) in dB per class: calm water is a mirror, towns are corner
# reflectors, vegetation scatters in volume (high VH).
S1_BACKSCATTER_DB = np.array([
    [-22.0, -28.0],
    [-9.0, -15.5],
    [-12.0, -20.0],
    [-4.0, -11.0],
    [-13.0, -21.0],
], dtype=np.float32)

# Levels of the (about N(0, 0.145)) noise fields that split the classes: roughly 9 % water,
# 1 % snow, 12 % urban, 16 % bare soil, the rest vegetation.
_WATER_BELOW, _SNOW_ABOVE = -0.19, 0.34
_BARE_BELOW, _URBAN_ABOVE = -0.14, 0.17


@dataclass(frozen=True)
class Landscape:
    """An endless procedural landscape on the S2 pixel grid; `period` sets its feature size."""
    seed: int
    period: float

    @classmethod
    def draw(cls, rng: np.random.Generator, width: int, height: int) -> "Landscape":
        size = max(width, height)
        return cls(seed=int(rng.integers(0, 2 ** 62)),
                   period=float(np.clip(0.5 * size, 64.0, 4000.0) * rng.uniform(0.8, 1.2)))

    def _field(self, index: int, period: float, octaves: int, row_off, col_off, height, width,
               step) -> np.ndarray:
        return fractal_noise(height, width, period=period, seed=self.seed + index,
                             octaves=octaves, row_off=row_off, col_off=col_off, step=step)

    def sample(self, row_off: float, col_off: float, height: int, width: int,
               step: float = 1.0):
        """Classes (uint8), vegetation vigour (0..1) and grain (about +-1) for a window.

        `step` is the pixel size in S2 pixels, so the same landscape renders at 20 m for S1.
        """
        window = (row_off, col_off, height, width, step)
        terrain = self._field(0, self.period, 6, *window)
        land_use = self._field(1, self.period / 2, 5, *window)
        classes = np.full((height, width), VEGETATION, dtype=np.uint8)
        classes[land_use < _BARE_BELOW] = BARE_SOIL
        classes[land_use > _URBAN_ABOVE] = URBAN
        classes[terrain < _WATER_BELOW] = WATER
        classes[terrain > _SNOW_ABOVE] = SNOW
        vigour = np.clip(0.7 + 2.5 * self._field(2, 40.0, 3, *window), 0.0, 1.0)
        grain = self._field(3, 6.0, 2, *window) * np.float32(1.0 / 0.3)
        return classes, vigour, grain

    def s2_reflectance(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """Clear-sky L1C reflectance, 13 x height x width float32 on the [0, 1] scale."""
        classes, vigour, grain = self.sample(row_off, col_off, height, width)
        reflectance = S2_SPECTRA.T[:, classes]  # 13 x h x w
        # Sparse or dry vegetation drifts towards the soil spectrum.
        veg = classes == VEGETATION
        dry = (1.0 - vigour[veg])[None]
        reflectance[:, veg] += dry * (S2_SPECTRA[BARE_SOIL] - S2_SPECTRA[VEGETATION])[:, None]
        contrast = np.where(classes == URBAN, 0.15, 0.06).astype(np.float32)
        reflectance *= (1.0 + contrast * grain)[None]
        return np.clip(reflectance, 0.0005, None)

    def s1_db(self, row_off: float, col_off: float, height: int, width: int,
              step: float) -> np.ndarray:
        """Speckle-free backscatter (VV, VH) in dB, 2 x height x width float32."""
        classes, vigour, grain = self.sample(row_off, col_off, height, width, step)
        db = S1_BACKSCATTER_DB[classes].transpose(2, 0, 1).copy()
        veg = classes == VEGETATION
        db[:, veg] += (3.0 * (vigour[veg] - 0.7))[None]   # more biomass, more volume scattering
        db += grain[None]
        return db
