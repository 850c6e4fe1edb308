"""What one run needs, why it cannot start yet, and the engine request it becomes.

The dock and the one-click layer action both describe a run as `RunInputs`, so they share one
validation (the sentence shown next to a disabled Run button) and one way of naming outputs.
"""
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle

from ..core.model_spec import MODEL_SUFFIXES
from .i18n import tr
from .layers import (S1_BAND_COUNT, S2_BAND_COUNT, file_path, is_raster, overlap_in_s2_crs,
                     s2_input_path, s2_level, s2_product_path)

OUTPUT_SUFFIX = "_cloudfree"


@dataclass
class RunInputs:
    s2: Optional[QgsRasterLayer]
    s1: Optional[QgsRasterLayer]
    output_dir: str
    aoi: Optional[QgsRectangle] = None  # in the S2 CRS; None = the whole S1/S2 overlap
    model: str = "default"              # a registered name or a model file path
    device: str = "auto"                # auto | cuda | cpu
    tile_size: Optional[int] = None     # None = the model's own value
    overlap: Optional[int] = None
    raw_network: bool = False           # True: write the network's output over clear pixels too
    s2_offset: str = "auto"             # auto | 0 | 1000 (DN subtracted from S2)
    adapt: bool = False                 # fine-tune on the scene's clear pixels first
    adapt_seconds: float = 60.0


def is_writable_folder(path: str) -> bool:
    """True when `path` is a writable folder or could be created as one.

    The folder is created only when a run starts, so a remembered folder that was deleted since
    still counts as valid when its parent is writable.
    """
    if not path:
        return False
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    return os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)


def _layer_problem(layer: Optional[QgsRasterLayer], sensor: str, bands: int,
                   band_names: str) -> str:
    if not is_raster(layer):
        return tr("Choose a {} layer.").format(sensor)
    if layer.bandCount() != bands:
        return tr("The {} layer '{}' has {} band(s); choose a {}-band image ({}).").format(
            sensor, layer.name(), layer.bandCount(), bands, band_names)
    if file_path(layer) is None:
        return tr("The {} layer '{}' is not a file on disk; save it as a GeoTIFF and choose "
                  "that layer.").format(sensor, layer.name())
    return ""


L1C_NEEDED = ("the network needs Level-1C (13 bands, top-of-atmosphere): load the Level-1C "
              "product of the same date (S2MSI1C, from dataspace.copernicus.eu).")


def s2_problem(layer: Optional[QgsRasterLayer]) -> str:
    """Why `layer` cannot be the S2 input, or "". A sub-layer of a Sentinel-2 L1C product (the
    10 m one QGIS adds, or any other) stands for its whole product."""
    if is_raster(layer) and s2_product_path(layer) is not None:
        level = s2_level(layer)
        if level != "L1C":
            return tr("The Sentinel-2 layer '{}' belongs to a Level-{} product, but {}").format(
                layer.name(), level[1:], tr(L1C_NEEDED))
        return ""
    if is_raster(layer) and layer.bandCount() == S2_BAND_COUNT - 1:
        return tr("The Sentinel-2 layer '{}' has 12 bands, as a Level-2A (surface reflectance) "
                  "image has, but {}").format(layer.name(), tr(L1C_NEEDED))
    return _layer_problem(layer, "Sentinel-2", S2_BAND_COUNT, "B1 to B12")


def s2_output_name(layer: QgsRasterLayer) -> str:
    """The name results are called after: the product's (…_MSIL1C_…) for a product sub-layer,
    whose layer name is a long GDAL string, else the layer's."""
    product = s2_product_path(layer)
    if product is None:
        return layer.name()
    path = product.replace("\\", "/").rstrip("/")
    if path.endswith(".xml"):
        path = path.rsplit("/", 1)[0]
    name = path.rsplit("/", 1)[-1]
    for suffix in (".zip", ".SAFE"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    return name


def s1_problem(layer: Optional[QgsRasterLayer]) -> str:
    return _layer_problem(layer, "Sentinel-1", S1_BAND_COUNT, "VV, VH")


def effective_aoi(inputs: RunInputs, project: QgsProject) -> QgsRectangle:
    """The area the engine will process: the AOI clipped to the S1/S2 overlap (S2 CRS)."""
    overlap = overlap_in_s2_crs(inputs.s2, inputs.s1, project)
    if inputs.aoi is None or inputs.aoi.isEmpty() or overlap.isEmpty():
        return overlap
    if not inputs.aoi.intersects(overlap):
        return QgsRectangle()
    return inputs.aoi.intersect(overlap)


def aoi_size_pixels(inputs: RunInputs, project: QgsProject) -> Tuple[int, int]:
    """Width and height of the processed area in S2 pixels, to say how big a run will be."""
    aoi = effective_aoi(inputs, project)
    # A product is restored on its 10 m grid whichever of its sub-layers was chosen.
    product = s2_product_path(inputs.s2) is not None
    x_res = min(10.0, inputs.s2.rasterUnitsPerPixelX()) if product \
        else inputs.s2.rasterUnitsPerPixelX()
    y_res = min(10.0, inputs.s2.rasterUnitsPerPixelY()) if product \
        else inputs.s2.rasterUnitsPerPixelY()
    return round(aoi.width() / x_res), round(aoi.height() / y_res)


def input_problem(inputs: RunInputs, project: QgsProject,
                  missing_packages: Sequence[str] = ()) -> str:
    """The one sentence that says why this run cannot start, or "" when it can."""
    if missing_packages:
        return tr("Install the missing Python packages first ({}).").format(
            ", ".join(missing_packages))
    problem = s2_problem(inputs.s2) or s1_problem(inputs.s1)
    if problem:
        return problem
    if overlap_in_s2_crs(inputs.s2, inputs.s1, project).isEmpty():
        return tr("The Sentinel-1 and Sentinel-2 layers do not overlap; choose images of the "
                  "same place.")
    if effective_aoi(inputs, project).isEmpty():
        return tr("The area of interest lies outside the area both images cover; choose an "
                  "area inside it.")
    if not inputs.model:
        return tr("Choose a model file (.onnx or .pt).")
    model_suffix = os.path.splitext(inputs.model)[1].lower()
    if model_suffix in MODEL_SUFFIXES and not os.path.isfile(inputs.model):
        return tr("The model file {} does not exist; choose an existing .onnx or .pt "
                  "file.").format(inputs.model)
    if not is_writable_folder(inputs.output_dir):
        return tr("The output folder '{}' is not writable; choose another folder.").format(
            inputs.output_dir)
    return ""


def _safe_stem(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "sentinel2"


def unique_output_paths(output_dir: str, s2_name: str) -> Tuple[str, str]:
    """Restored and gate paths in `output_dir` that overwrite nothing (…_2, …_3 when taken)."""
    from ..core.engine import default_gate_path   # numpy + rasterio: only when a run starts

    base = _safe_stem(s2_name) + OUTPUT_SUFFIX
    number = 1
    while True:
        stem = base if number == 1 else f"{base}_{number}"
        restored = os.path.join(output_dir, stem + ".tif")
        gate = str(default_gate_path(restored))
        if not (os.path.exists(restored) or os.path.exists(gate)):
            return restored, gate
        number += 1


def build_request(inputs: RunInputs, project: QgsProject):
    """The engine request for valid inputs; creates the output folder, picks unused names.

    Runs on the main thread: it reads the layers, which the worker must never touch.
    """
    from ..core.engine import RemovalRequest

    os.makedirs(inputs.output_dir, exist_ok=True)
    out_path, gate_path = unique_output_paths(inputs.output_dir, s2_output_name(inputs.s2))
    aoi = effective_aoi(inputs, project)
    return RemovalRequest(
        s2_path=s2_input_path(inputs.s2), s1_path=file_path(inputs.s1),
        out_path=out_path, gate_path=gate_path,
        aoi=(aoi.xMinimum(), aoi.yMinimum(), aoi.xMaximum(), aoi.yMaximum()),  # S2 CRS
        model=inputs.model, device=inputs.device,
        tile_size=inputs.tile_size, overlap=inputs.overlap, raw_network=inputs.raw_network,
        s2_offset=inputs.s2_offset, adapt=inputs.adapt, adapt_seconds=inputs.adapt_seconds)
