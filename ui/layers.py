"""Layer questions the plugin asks on the main thread, and the styled result layers it adds.

The engine reads files by path in a worker thread, so everything that touches a QgsMapLayer
(band counts, extents, matching S1 to S2, styling the outputs) lives here and runs before the
task starts or after it finished.
"""
import os
from typing import List, Optional, Tuple

from qgis.core import (
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRasterShader,
    QgsRectangle,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtCore import QT_TRANSLATE_NOOP
from qgis.PyQt.QtGui import QColor

from .i18n import CONTEXT, tr

S2_BAND_COUNT = 13
S1_BAND_COUNT = 2
TRUE_COLOUR_BANDS = (4, 3, 2)  # B4 red, B3 green, B2 blue in the 13-band L1C order
STRETCH_PERCENTILES = (0.02, 0.98)
STRETCH_SAMPLE_SIZE = 250_000
# Gate value -> colour and legend entry; 0 = reconstructed from SAR, 1 = clear sky.
GATE_RAMP = (
    (0.0, "#0d0887", QT_TRANSLATE_NOOP(CONTEXT, "Reconstructed from SAR (cloud)")),
    (0.5, "#cc4778", QT_TRANSLATE_NOOP(CONTEXT, "Blend of optical and SAR")),
    (1.0, "#f0f921", QT_TRANSLATE_NOOP(CONTEXT, "Clear sky (optical kept)")),
)


def is_raster(layer: Optional[QgsMapLayer]) -> bool:
    return isinstance(layer, QgsRasterLayer) and layer.isValid()


def file_path(layer: QgsRasterLayer) -> Optional[str]:
    """The file a GDAL layer reads, or None for web services, memory or virtual layers.

    The engine opens inputs with rasterio by path, so only layers backed by a file qualify.
    """
    if layer.providerType() != "gdal":
        return None
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path", "")
    return path if path and os.path.isfile(path) else None


def s2_product_path(layer: QgsRasterLayer) -> Optional[str]:
    """The Sentinel-2 product a SENTINEL2 sub-layer belongs to, or None for other layers.

    QGIS opens a .SAFE product or its MTD_MSIL1C.xml as separate 10 m / 20 m / 60 m
    sub-layers (`SENTINEL2_L1C:<MTD_MSIL1C.xml>:10m:EPSG_32631`), and lists a zipped product's
    band files; any of them stands for the whole product, which the engine reads as the 13-band
    stack.
    """
    if layer.providerType() != "gdal":
        return None
    from ..core.s2_products import product_of_subdataset   # pure Python, no rasterio

    return product_of_subdataset(layer.source())


def s2_level(layer: QgsRasterLayer) -> str:
    """"L1C", "L2A" or "L1B" for a layer of a Sentinel-2 product, "" for other layers."""
    if layer.providerType() != "gdal":
        return ""
    from ..core.s2_products import product_level

    return product_level(layer.source()) or ""


def s2_input_path(layer: QgsRasterLayer) -> Optional[str]:
    """What the engine opens for an S2 layer: its product for a Sentinel-2 sub-layer, else the
    layer's file."""
    return s2_product_path(layer) or file_path(layer)


def extent_in_crs(layer: QgsMapLayer, crs: QgsCoordinateReferenceSystem,
                  project: QgsProject) -> QgsRectangle:
    """The layer's extent as a bounding box in `crs`; empty when it cannot be transformed."""
    if layer.crs() == crs:
        return QgsRectangle(layer.extent())
    transform = QgsCoordinateTransform(layer.crs(), crs, project.transformContext())
    try:
        return transform.transformBoundingBox(layer.extent())
    except QgsCsException:
        return QgsRectangle()


def overlap_in_s2_crs(s2: QgsRasterLayer, s1: QgsRasterLayer, project: QgsProject) -> QgsRectangle:
    """Where both images have pixels, in the S2 CRS (the grid the engine writes on)."""
    s1_extent = extent_in_crs(s1, s2.crs(), project)
    if s1_extent.isEmpty() or not s1_extent.intersects(s2.extent()):
        return QgsRectangle()
    return s1_extent.intersect(s2.extent())


def matching_s1_layers(s2: QgsRasterLayer, project: QgsProject) -> List[QgsRasterLayer]:
    """Loaded 2-band rasters that overlap `s2`, largest overlap first (the likeliest partner)."""
    scored = []
    for layer in project.mapLayers().values():
        if layer.id() == s2.id() or not is_raster(layer) or layer.bandCount() != S1_BAND_COUNT:
            continue
        overlap = overlap_in_s2_crs(s2, layer, project)
        if not overlap.isEmpty():
            scored.append((overlap.area(), layer.name(), layer))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [layer for _, _, layer in scored]


def style_true_colour(layer: QgsRasterLayer) -> None:
    """B4/B3/B2 with a per-band 2–98 % cumulative-cut stretch, as analysts view L1C scenes."""
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *TRUE_COLOUR_BANDS)
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, set_enhancement in zip(TRUE_COLOUR_BANDS, setters):
        low, high = provider.cumulativeCut(band, *STRETCH_PERCENTILES, layer.extent(),
                                           STRETCH_SAMPLE_SIZE)
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(
            QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        set_enhancement(enhancement)
    origin = renderer.minMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.CumulativeCut)
    origin.setCumulativeCutLower(STRETCH_PERCENTILES[0])
    origin.setCumulativeCutUpper(STRETCH_PERCENTILES[1])
    renderer.setMinMaxOrigin(origin)
    layer.setRenderer(renderer)


def style_gate(layer: QgsRasterLayer) -> None:
    """A fixed 0..1 ramp with labelled stops, so the legend explains the gate by itself."""
    ramp = QgsColorRampShader(GATE_RAMP[0][0], GATE_RAMP[-1][0])
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(value, QColor(colour), tr(label))
                               for value, colour, label in GATE_RAMP])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(GATE_RAMP[0][0])
    renderer.setClassificationMax(GATE_RAMP[-1][0])
    layer.setRenderer(renderer)


def add_result_layers(project: QgsProject, restored_path: str,
                      gate_path: str) -> Tuple[QgsLayerTreeGroup, QgsRasterLayer, QgsRasterLayer]:
    """Add the styled outputs in a group at the top of the layer tree, above the inputs.

    The gate starts unchecked: it sits under the opaque restored image, and the legend already
    shows what it means.
    """
    stem = os.path.splitext(os.path.basename(restored_path))[0]
    restored = QgsRasterLayer(restored_path, stem)
    gate = QgsRasterLayer(gate_path, tr("{} gate confidence").format(stem))
    style_true_colour(restored)
    style_gate(gate)
    group = project.layerTreeRoot().insertGroup(0, tr("Cloud removal: {}").format(stem))
    for layer in (restored, gate):
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    group.findLayer(gate.id()).setItemVisibilityChecked(False)
    return group, restored, gate
