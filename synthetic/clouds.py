"""Procedural clouds and cloud shadows laid over a clear Sentinel-2 L1C image.

Real cloudy/clear pairs with SAR are far too few to train on (see the data README), so training
pairs are made by putting simulated clouds over clear scenes. The model here is a simple
radiative one per band b: the ground is first darkened by shadow, then seen through a cloud layer
of optical depth tau_b,

    cloudy_b = ground_b * exp(-tau_b) + R_b * (1 - exp(-tau_b)),

where R_b is the cloud's own top-of-atmosphere reflectance. The cloud shape is fractal noise
thresholded so that the requested fraction of pixels is cloudy; optical depth grows smoothly
from zero at the cloud edge, which gives soft edges and leaves every other pixel bit-identical.

- thin haze: small depth, stronger at short wavelengths (tau_b ~ (490 nm / lambda_b)^k), and
  bright in B10 (1375 nm), where the atmosphere hides the ground but cirrus reflects;
- thick cloud: large, spectrally flat depth and a bright spectrum measured on real SEN12MS-CR
  cloudy pixels (near-flat 0.5-1.2 in VNIR, lower in B9 water vapour and SWIR, little in B10);
- shadow: the thick cloud's footprint displaced along a random sun direction, darkening the
  ground more in the NIR/SWIR than in the blue, where diffuse skylight still lights the shadow.

`CloudField` holds every random choice and renders any window of a scene from global pixel
coordinates, so generated 100-megapixel scenes get clouds window by window, consistently.
"""
from dataclasses import dataclass

import numpy as np

from .noise import fractal_noise

KINDS = ("thin", "thick", "shadow", "mixed")

# Sentinel-2 central wavelengths (nm), bands B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12.
S2_WAVELENGTHS_NM = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190],
                             dtype=np.float64)
_B10 = 10
# Thick-cloud reflectance relative to B2: medians of bright cloudy pixels in SEN12MS-CR patches.
# B10 is drawn on its own (low clouds hardly show there, high ones do).
_THICK_SPECTRUM = np.array([1.0, 1.0, 0.97, 1.02, 1.03, 1.07, 1.11, 1.07, 1.13, 0.55, 0.0, 0.8, 0.6])
# Fraction of the shadow's darkening felt per band: diffuse skylight fills blue shadows.
_SHADOW_RESPONSE = np.clip(1.0 - 0.45 * (490.0 / S2_WAVELENGTHS_NM) ** 2, 0.0, 1.0)
# Preview resolution used to find the noise level that gives the requested coverage.
_PREVIEW_PIXELS = 1024


@dataclass
class CloudSample:
    """A simulated cloudy image and the truth about what was added."""
    cloudy: np.ndarray  # 13 x H x W float32, [0, 1] reflectance scale (bright cloud may exceed 1)
    cloud: np.ndarray   # H x W float32 opacity at 490 nm, 0 = clear
    shadow: np.ndarray  # H x W float32 shadow strength, 0 = unshadowed


@dataclass(frozen=True)
class CloudField:
    """Every random choice of one cloud situation; renders any window of its scene."""
    seed: int
    period: float              # coarsest noise wavelength, pixels
    edge_threshold: float      # noise level of the cloud edge (sets the coverage)
    core_threshold: float      # noise level where thick cloud begins (>= edge_threshold)
    depth_scale: float         # noise units over which optical depth grows by the depth factors
    haze_depth: float          # peak optical depth of thin haze at 490 nm; 0 = none
    thick_depth: float         # optical depth gained per depth_scale inside the core; 0 = none
    haze_exponent: float       # Angstrom-like exponent k of the haze
    haze_reflectance: np.ndarray   # (13,)
    thick_reflectance: np.ndarray  # (13,)
    haze_b10_factor: float     # haze depth in B10 relative to 490 nm (cirrus shows there)
    shadow_offset: tuple       # (rows, cols) from a cloud to its shadow
    shadow_depth: float        # 0 = no shadow

    @classmethod
    def draw(cls, rng: np.random.Generator, height: int, width: int, kind: str = "mixed",
             coverage: "float | None" = None, period: "float | None" = None) -> "CloudField":
        """Draw a cloud situation; `coverage` (fraction of cloudy pixels) is uniform if None."""
        if kind not in KINDS:
            raise ValueError(f"unknown cloud kind {kind!r}; expected one of {KINDS}")
        if coverage is None:
            coverage = float(rng.uniform(0.0, 1.0))
        if not 0.0 <= coverage <= 1.0:
            raise ValueError(f"coverage must be within [0, 1], got {coverage}")
        if period is None:
            period = float(rng.uniform(0.4, 1.5)) * max(height, width)
        if kind == "mixed":
            has_thick = rng.random() < 0.75
            has_haze = not has_thick or rng.random() < 0.5
            has_shadow = has_thick and rng.random() < 0.6
        else:
            has_thick = kind in ("thick", "shadow")
            has_haze = kind == "thin"
            has_shadow = kind == "shadow"
        seed = int(rng.integers(0, 2 ** 62))
        step = max(1.0, max(height, width) / _PREVIEW_PIXELS)
        preview = fractal_noise(int(height / step) or 1, int(width / step) or 1,
                                period=period, seed=seed, step=step)
        edge = _threshold(preview, coverage)
        # With haze around it, thick cloud fills only the densest part of the footprint.
        core_fraction = float(rng.uniform(0.3, 0.9)) if has_haze else 1.0
        core = _threshold(preview, coverage * core_fraction) if has_thick else edge
        brightness = float(rng.uniform(0.45, 1.2))
        thick_reflectance = brightness * _THICK_SPECTRUM * rng.uniform(0.95, 1.05, 13)
        thick_reflectance[_B10] = rng.uniform(0.005, 0.08)
        haze_exponent = float(rng.uniform(0.5, 2.0))
        haze_reflectance = (rng.uniform(0.25, 0.6)
                            * (490.0 / S2_WAVELENGTHS_NM) ** (0.3 * haze_exponent))
        haze_reflectance[_B10] = rng.uniform(0.05, 0.25)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        distance = rng.uniform(0.05, 0.25) * period
        return cls(
            seed=seed, period=period,
            edge_threshold=edge, core_threshold=core,
            depth_scale=float(preview.std()) or 1.0,
            haze_depth=float(rng.uniform(0.2, 1.2)) if has_haze else 0.0,
            thick_depth=float(rng.uniform(3.0, 12.0)) if has_thick else 0.0,
            haze_exponent=haze_exponent,
            haze_reflectance=haze_reflectance.astype(np.float32),
            thick_reflectance=thick_reflectance.astype(np.float32),
            haze_b10_factor=float(rng.uniform(0.7, 1.2)),
            shadow_offset=(distance * np.sin(angle), distance * np.cos(angle)),
            shadow_depth=float(rng.uniform(0.4, 0.8)) if has_shadow else 0.0,
        )

    def _noise(self, row_off: float, col_off: float, height: int, width: int) -> np.ndarray:
        return fractal_noise(height, width, period=self.period, seed=self.seed,
                             row_off=row_off, col_off=col_off)

    def _thick_depth(self, noise: np.ndarray) -> np.ndarray:
        excess = np.maximum(noise - np.float32(self.core_threshold), 0.0)
        return np.float32(self.thick_depth / self.depth_scale) * excess

    def composite(self, clear: np.ndarray, row_off: int = 0, col_off: int = 0) -> CloudSample:
        """Lay this field's clouds over `clear` (13 x h x w), the window at (row_off, col_off)."""
        clear = np.asarray(clear, dtype=np.float32)
        _, h, w = clear.shape
        noise = self._noise(row_off, col_off, h, w)
        haze = np.float32(self.haze_depth) * np.tanh(
            np.maximum(noise - np.float32(self.edge_threshold), 0.0) / np.float32(self.depth_scale))
        thick = self._thick_depth(noise) if self.thick_depth else np.zeros_like(noise)

        if self.shadow_depth:
            dy, dx = self.shadow_offset
            cast = self._thick_depth(self._noise(row_off - dy, col_off - dx, h, w))
            shadow = np.float32(self.shadow_depth) * -np.expm1(-cast)
        else:
            shadow = np.zeros_like(noise)

        # Only the pixels under cloud or shadow are computed (as bands x n): partly clear scenes
        # cost less, and every other pixel is copied bit for bit.
        touched = (haze > 0) | (thick > 0) | (shadow > 0)
        ground = clear[:, touched]
        if self.shadow_depth:
            ground *= 1.0 - shadow[touched] * _SHADOW_RESPONSE.astype(np.float32)[:, None]
        spectral = (490.0 / S2_WAVELENGTHS_NM) ** self.haze_exponent
        spectral[_B10] = self.haze_b10_factor
        haze_b = haze[touched] * spectral.astype(np.float32)[:, None]
        thick_b = np.broadcast_to(thick[touched], haze_b.shape)
        depth_b = thick_b + haze_b
        # Thick cloud is brighter where it is deeper (more light scattered back up), so its
        # tops have structure rather than one flat colour.
        tops = 0.8 + 0.2 * np.tanh(thick[touched] / np.float32(3.0))
        # Depth-weighted mean of the two layers' reflectances; undefined (and unused) at depth 0.
        reflectance = np.divide(thick_b * self.thick_reflectance[:, None] * tops
                                + haze_b * self.haze_reflectance[:, None],
                                depth_b, out=np.zeros_like(depth_b), where=depth_b > 0)
        opacity_b = -np.expm1(-depth_b)
        cloudy = clear.copy()
        cloudy[:, touched] = ground * (1.0 - opacity_b) + reflectance * opacity_b
        return CloudSample(cloudy=cloudy,
                           cloud=(-np.expm1(-(thick + haze))).astype(np.float32),
                           shadow=shadow.astype(np.float32))


# How fast the gate's target falls with cloud opacity: (transmittance)^4 is 0.66 at 10 %
# opacity and 0.06 at 50 %. A pixel whose haze the output must remove is not "clear", however
# much ground shows through: the gate routes it to the restoration, which still sees the optical
# input through the decoder.
CLEAR_TARGET_EXPONENT = 4.0


def clear_sky_target(sample: CloudSample, clear_below: float = 0.0) -> np.ndarray:
    """The gate's training target for a simulated sample: 1 where untouched, towards 0 under
    cloud and shadow (H x W float32).

    With `clear_below` > 0, a pixel whose cloud and shadow together dim it by no more than that
    fraction counts as clear too, and the target falls from there as it does from 0 otherwise.
    Real cloud masks draw the line above 0: the SEN12MS-CR masks call clear hazy ground whose
    visible reflectance the cloudy date raises over the clear date by 0.02-0.06 (90th
    percentile; 0.05-0.09 at the 99th, in the training triplets 581, 746 and 2729), about what
    5-20 % of simulated haze adds. With the target falling from the first trace of haze, the
    gate learns to doubt exactly the ground those masks call clear.
    """
    if not 0.0 <= clear_below < 1.0:
        raise ValueError(f"clear_below must be in [0, 1), got {clear_below}")
    opacity = 1.0 - np.clip((1.0 - sample.cloud) * (1.0 - sample.shadow), 0.0, 1.0)
    beyond = np.clip((opacity - clear_below) / (1.0 - clear_below), 0.0, 1.0)
    return np.power(1.0 - beyond, CLEAR_TARGET_EXPONENT).astype(np.float32)


def _threshold(noise: np.ndarray, coverage: float) -> float:
    """Noise level above which a `coverage` fraction of the pixels lies (all of them at 1)."""
    if coverage >= 1.0:
        return float(noise.min()) - 1.0
    return float(np.quantile(noise, 1.0 - coverage))


def simulate_clouds(clear: np.ndarray, rng: np.random.Generator, kind: str = "mixed",
                    coverage: "float | None" = None) -> CloudSample:
    """Simulate clouds of `kind` over a clear 13 x H x W L1C image on the [0, 1] scale.

    Kinds: "thin" (haze), "thick" (opaque cloud), "shadow" (thick cloud and its displaced shadow),
    "mixed" (a random combination). `coverage` is the fraction of pixels touched by cloud; None
    draws it uniformly in [0, 1]. The same generator state gives the same sample.
    """
    clear = np.asarray(clear, dtype=np.float32)
    if clear.ndim != 3 or clear.shape[0] != len(S2_WAVELENGTHS_NM):
        raise ValueError(f"expected a 13 x H x W Sentinel-2 array, got shape {clear.shape}")
    field = CloudField.draw(rng, clear.shape[1], clear.shape[2], kind=kind, coverage=coverage)
    return field.composite(clear)
