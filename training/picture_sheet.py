"""The evaluation's picture sheet: one row per scene, cloudy | restored | truth | gate.

Numbers hide the failures people see at once (cloud shapes left under thick cloud, tinted
ground, a gate that never closes), so every evaluation can write this sheet. The three RGB
panels use one fixed stretch (reflectance 0 to SHEET_MAX_REFLECTANCE, true colour B4/B3/B2), the
same for every scene and every model, so sheets of two models compare pixel for pixel; the gate
uses the quicklook's colour ramp (dark = reconstructed from SAR, bright = optical).
"""
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from ..cli.quicklook import TRUE_COLOUR, draw_text, gate_ramp, stretch

SHEET_MAX_REFLECTANCE = 0.3
COLUMNS = ("CLOUDY", "RESTORED", "TRUTH", "GATE")
_GAP, _TITLE, _LABEL = 6, 24, 40
_BACKGROUND = 24


def _rgb(image: np.ndarray) -> np.ndarray:
    """A 13-band [0, 1] image -> 3×H×W uint8 true colour with the sheet's fixed stretch."""
    bands = [b - 1 for b in TRUE_COLOUR]
    return stretch(image[bands], 0.0, SHEET_MAX_REFLECTANCE)


def write_picture_sheet(path: Path, pictures) -> None:
    """`pictures`: (name, cloudy, restored, truth, gate) per scene, images 13×H×W on [0, 1] and
    the gate H×W. Rows are numbered 1…n in the given order (the report lists the names)."""
    if not pictures:
        return
    side = max(max(p[1].shape[-2:]) for p in pictures)
    width = _LABEL + len(COLUMNS) * (side + _GAP)
    height = _TITLE + len(pictures) * (side + _GAP)
    canvas = np.full((3, height, width), _BACKGROUND, np.uint8)
    for column, title in enumerate(COLUMNS):
        draw_text(canvas, title, 5, _LABEL + column * (side + _GAP))
    for row, (_, cloudy, restored, truth, gate) in enumerate(pictures):
        top = _TITLE + row * (side + _GAP)
        draw_text(canvas, str(row + 1), top + side // 2 - 7, 6)
        for column, panel in enumerate((_rgb(cloudy), _rgb(restored), _rgb(truth),
                                        gate_ramp(gate))):
            left = _LABEL + column * (side + _GAP)
            canvas[:, top:top + panel.shape[1], left:left + panel.shape[2]] = panel
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=width, height=height, count=3,
                           dtype="uint8") as dst:
            dst.write(canvas)
