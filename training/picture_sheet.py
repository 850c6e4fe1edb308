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


def rgb_panel(image: np.ndarray) -> np.ndarray:
    """A 13-band [0, 1] image -> 3×H×W uint8 true colour with the sheet's fixed stretch."""
    bands = [b - 1 for b in TRUE_COLOUR]
    return stretch(image[bands], 0.0, SHEET_MAX_REFLECTANCE)


def write_picture_sheet(path: Path, pictures) -> None:
    """`pictures`: (name, cloudy, restored, truth, gate) per scene, images 13×H×W on [0, 1] and
    the gate H×W. Rows are numbered 1…n in the given order (the report lists the names)."""
    write_sheet(path, COLUMNS, [[rgb_panel(cloudy), rgb_panel(restored), rgb_panel(truth),
                                 gate_ramp(gate)] for _, cloudy, restored, truth, gate in pictures])


def write_sheet(path: Path, titles, rows) -> None:
    """A PNG grid: one titled column per entry of `titles`, one numbered row per entry of
    `rows` (a list of 3×H×W uint8 panels, one per column). Nothing is written for no rows."""
    if not rows:
        return
    side = max(max(panel.shape[-2:]) for row in rows for panel in row)
    width = _LABEL + len(titles) * (side + _GAP)
    height = _TITLE + len(rows) * (side + _GAP)
    canvas = np.full((3, height, width), _BACKGROUND, np.uint8)
    for column, title in enumerate(titles):
        draw_text(canvas, title, 5, _LABEL + column * (side + _GAP))
    for number, panels in enumerate(rows):
        top = _TITLE + number * (side + _GAP)
        draw_text(canvas, str(number + 1), top + side // 2 - 7, 6)
        for column, panel in enumerate(panels):
            left = _LABEL + column * (side + _GAP)
            canvas[:, top:top + panel.shape[1], left:left + panel.shape[2]] = panel
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=width, height=height, count=3,
                           dtype="uint8") as dst:
            dst.write(canvas)
