"""A side-by-side PNG (cloudy | restored | gate) for people to judge a run at a glance.

Written with GDAL's PNG driver through rasterio, so it needs nothing beyond the engine's own
dependencies; the panel titles use a tiny built-in bitmap font for the same reason.
"""
import warnings

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

TRUE_COLOUR = (4, 3, 2)          # 1-based band numbers of B4, B3, B2 in a 13-band S2 file
STRETCH_PERCENTILES = (2, 98)
# The stretch is taken over the ground: pixels whose mean RGB is below this (DN, reflectance
# 0.35) are rarely cloud, so remaining clouds do not wash the ground out to black.
GROUND_BELOW_DN = 3500
# Viridis anchors: perceptually even and readable by colour-blind viewers; dark = from SAR.
GATE_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98),
                      (253, 231, 37)], dtype=np.float32)
_GAP, _TITLE_HEIGHT, _FONT_SCALE, _LEGEND_WIDTH = 8, 26, 2, 96
_BACKGROUND = 24

# 5 x 7 glyphs for the characters the titles use (model names included).
_GLYPHS = {
    " ": ["     "] * 7,
    "0": [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    "1": ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "2": [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    "3": [" ### ", "#   #", "    #", "  ## ", "    #", "#   #", " ### "],
    "4": ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    "5": ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    "6": [" ### ", "#    ", "#    ", "#### ", "#   #", "#   #", " ### "],
    "7": ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    "8": [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    "9": [" ### ", "#   #", "#   #", " ####", "    #", "    #", " ### "],
    "A": [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "C": [" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "],
    "D": ["#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "],
    "E": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"],
    "G": [" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ### "],
    "H": ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "I": [" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "L": ["#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"],
    "O": [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "P": ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "],
    "R": ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
    "S": [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
    "T": ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
    "U": ["#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "Y": ["#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "],
    "B": ["#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "],
    "F": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "],
    "K": ["#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"],
    "M": ["#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"],
    "N": ["#   #", "##  #", "# # #", "#  ##", "#   #", "#   #", "#   #"],
    "V": ["#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "],
    "W": ["#   #", "#   #", "#   #", "# # #", "# # #", "## ##", "#   #"],
    "X": ["#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"],
    "-": ["     ", "     ", "     ", " ### ", "     ", "     ", "     "],
    ".": ["     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "],
}


def _read_small(path, bands, panel_side: int) -> np.ndarray:
    """The bands of `path`, averaged down so the longer side is at most `panel_side` pixels."""
    with rasterio.open(path) as src:
        factor = max(1, -(-max(src.height, src.width) // panel_side))
        shape = (len(bands), src.height // factor or 1, src.width // factor or 1)
        return src.read(list(bands), out_shape=shape, resampling=Resampling.average,
                        masked=True).astype(np.float32).filled(np.nan)


def stretch(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (rgb - low) / max(high - low, 1e-6)
    return (np.nan_to_num(np.clip(scaled, 0, 1)) * 255).astype(np.uint8)


def gate_ramp(values: np.ndarray) -> np.ndarray:
    """Colour a 0..1 image with GATE_RAMP (3 x H x W uint8); nodata is black."""
    position = np.clip(np.nan_to_num(values), 0, 1) * (len(GATE_RAMP) - 1)
    lower = np.minimum(position.astype(int), len(GATE_RAMP) - 2)
    fraction = (position - lower)[..., None]
    rgb = GATE_RAMP[lower] * (1 - fraction) + GATE_RAMP[lower + 1] * fraction
    rgb[~np.isfinite(values)] = 0
    return rgb.transpose(2, 0, 1).astype(np.uint8)


def draw_text(image: np.ndarray, text: str, row: int, col: int) -> int:
    """Write `text` in white into the 3 x H x W image, top-left at (row, col); returns the
    column after it. Text beyond the image is cut off; a character the font lacks is a space."""
    for character in text.upper():
        rows = _GLYPHS.get(character, _GLYPHS[" "])
        glyph = np.array([[c == "#" for c in line] for line in rows])
        glyph = np.kron(glyph, np.ones((_FONT_SCALE, _FONT_SCALE), dtype=bool))
        height, width = glyph.shape
        area = image[:, row:row + height, col:col + width]
        area[:, glyph[:area.shape[1], :area.shape[2]]] = 255
        col += width + _FONT_SCALE
    return col


def _draw_gate_title(image: np.ndarray, row: int, col: int) -> None:
    """'GATE  SAR 0 [colour bar] 1 OPTICAL': the legend of the gate panel's colours."""
    col = draw_text(image, "GATE  SAR 0", row, col) + _FONT_SCALE
    bar = gate_ramp(np.linspace(0, 1, _LEGEND_WIDTH)[None, :].repeat(7 * _FONT_SCALE, axis=0))
    area = image[:, row:row + bar.shape[1], col:col + bar.shape[2]]
    area[...] = bar[:, :area.shape[1], :area.shape[2]]
    draw_text(image, "1 OPTICAL", row, col + _LEGEND_WIDTH + 2 * _FONT_SCALE)


def write_quicklook(png_path, cloudy_path, restored_path, gate_path, panel_side: int = 512):
    """Write cloudy | restored | gate as one PNG with titles; both RGB panels share one stretch
    (from the restored ground), so brightness differences between them are real."""
    cloudy = _read_small(cloudy_path, TRUE_COLOUR, panel_side)
    restored = _read_small(restored_path, TRUE_COLOUR, panel_side)
    gate = _read_small(gate_path, (1,), panel_side)[0]
    pixels = restored.reshape(3, -1)
    ground = pixels[:, np.nanmean(pixels, axis=0) < GROUND_BELOW_DN]
    # One stretch for all three bands keeps the colour balance of the data.
    low, high = np.nanpercentile(ground if ground.size else pixels, STRETCH_PERCENTILES)
    panels = [("CLOUDY S2", stretch(cloudy, low, high)),
              ("RESTORED", stretch(restored, low, high)),
              (None, gate_ramp(gate))]
    height = max(p.shape[1] for _, p in panels)
    width = sum(p.shape[2] for _, p in panels) + _GAP * (len(panels) + 1)
    canvas = np.full((3, height + _TITLE_HEIGHT + _GAP, width), _BACKGROUND, dtype=np.uint8)
    col = _GAP
    title_row = (_TITLE_HEIGHT - 7 * _FONT_SCALE) // 2
    for title, panel in panels:
        if title:
            draw_text(canvas, title, title_row, col)
        else:
            _draw_gate_title(canvas, title_row, col)
        canvas[:, _TITLE_HEIGHT:_TITLE_HEIGHT + panel.shape[1], col:col + panel.shape[2]] = panel
        col += panel.shape[2] + _GAP
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png_path, "w", driver="PNG", width=canvas.shape[2],
                           height=canvas.shape[1], count=3, dtype="uint8") as dst:
            dst.write(canvas)
