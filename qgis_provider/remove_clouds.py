"""`sar_cloud_removal:remove_clouds`: the engine as a Processing algorithm.

Processing gives batch mode, the graphical modeler and `qgis_process` for free, and runs the
algorithm in a background thread, so this class only turns parameters into a `RemovalRequest` and
relays progress, cancel and errors; every check and all the work stay in `core.engine`, the code
path the dock and the CLI share.
"""
from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsRasterLayer)

from ..core.errors import UserError
from ..ui.i18n import tr
from ..ui.layers import file_path, s2_level, s2_product_path, style_gate, style_true_colour
from ..ui.settings import DEVICES  # the engine's device names, in the DEVICE options' order
from ..ui.settings import S2_OFFSETS  # the engine's offset settings, in S2_OFFSET's order


class RemoveCloudsAlgorithm(QgsProcessingAlgorithm):
    S2 = "S2"
    S1 = "S1"
    EXTENT = "EXTENT"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    RAW_NETWORK = "RAW_NETWORK"
    ADAPT = "ADAPT"
    ADAPT_SECONDS = "ADAPT_SECONDS"
    S2_OFFSET = "S2_OFFSET"
    OUTPUT = "OUTPUT"
    GATE_OUTPUT = "GATE_OUTPUT"

    def createInstance(self):
        return RemoveCloudsAlgorithm()

    def name(self):
        return "remove_clouds"

    def displayName(self):
        return tr("Remove clouds (Sentinel-1 + Sentinel-2)")

    def group(self):
        return tr("Cloud removal")

    def groupId(self):
        return "cloud_removal"

    def tags(self):
        return tr("cloud,removal,sentinel-2,sentinel-1,sar,radar,ib-hfn,deep learning,"
                       "onnx,restoration").split(",")

    def shortHelpString(self):
        from ..core.model_spec import DEFAULT_MODEL, list_models

        names = ", ".join(f"{name} (default)" if name == DEFAULT_MODEL else name
                          for name in list_models())
        return tr(
            "Restores a cloudy Sentinel-2 L1C image with a co-registered Sentinel-1 SAR image "
            "(radar sees through clouds) using a neural network (IB-HFN by default).\n\n"
            "Sentinel-2: a 13-band L1C image B1…B12 (with B8A and B10) in digital numbers, "
            "a loaded sub-layer of an L1C product, or the path of a product as downloaded "
            "(.SAFE folder, its .zip, its MTD_MSIL1C.xml) or of a folder of one GeoTIFF per "
            "band (B1…B12, B8A in the file names). Level-2A is refused: the network needs "
            "L1C.\n"
            "Sentinel-2 DN offset: products processed with baseline 04.00 or later (from "
            "25 January 2022) carry +1000. Auto reads it from the product's metadata, else "
            "from the pixels, and stops with a message when a scene is too cloudy to tell; "
            "then choose 0 or 1000.\n"
            "Sentinel-1: 2 bands VV and VH, in dB or linear power, on any grid; it is "
            "reprojected onto the Sentinel-2 grid (averaged when finer). Zeros outside the "
            "swath and nodata give nodata in the result.\n"
            "Area of interest: leave empty to process where both images overlap.\n"
            "Model: leave empty for the shipped model, or give a .onnx / .pt file or the "
            "name of a registered model: {}.\n"
            "Device: Auto uses a CUDA GPU when one is available and the CPU otherwise; "
            "the log says which one ran.\n"
            "Tile size / overlap (advanced): leave empty for the model's own values; a "
            "smaller tile needs less memory.\n"
            "Raw network output (advanced): write the network's output everywhere; by "
            "default the pixels the gate finds clear are written unchanged from the input.\n"
            "Adapt to this scene: before restoring, fine-tune a copy of the network on the "
            "scene's own clear pixels for the given budget (advanced); it is kept only if it "
            "restores held-out clear pixels better, and the log says what happened.\n\n"
            "Outputs: the restored 13-band image on the Sentinel-2 grid, in the input's units, "
            "and a gate-confidence layer (1 = clear sky, the optical signal passes through; "
            "0 = reconstructed from SAR). Both are GeoTIFF files.").format(names)

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.S2, tr("Cloudy Sentinel-2 L1C image (13 bands)")))
        self.addParameter(QgsProcessingParameterEnum(
            self.S2_OFFSET, tr("Sentinel-2 DN offset"),
            options=[tr("Auto (from the product's metadata, else the pixels)"),
                     tr("0 (processed before 2022)"),
                     tr("1000 (processing baseline 04.00 or later, from 2022)")],
            defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.S1, tr("Sentinel-1 GRD image (VV, VH)")))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, tr("Area of interest (empty: where both images overlap)"),
            optional=True))
        # A file parameter whose filter ends in "All files" accepts any text, so the Toolbox gets
        # a file browser for .onnx / .pt while batch mode, the modeler and qgis_process can also
        # pass a registered model name; empty means the shipped default model.
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, tr("Model (.onnx / .pt file or registered name; empty: default)"),
            behavior=QgsProcessingParameterFile.File,
            fileFilter=tr("Cloud removal models (*.onnx *.pt);;All files (*)"),
            optional=True))
        self._add_advanced(QgsProcessingParameterEnum(
            self.DEVICE, tr("Device"),
            options=[tr("Auto (GPU when available)"), tr("GPU (CUDA)"), tr("CPU")],
            defaultValue=0))
        self._add_advanced(QgsProcessingParameterNumber(
            self.TILE_SIZE, tr("Tile size in pixels (empty: the model's)"),
            type=QgsProcessingParameterNumber.Integer, optional=True, minValue=1))
        self._add_advanced(QgsProcessingParameterNumber(
            self.OVERLAP, tr("Tile overlap in pixels (empty: the model's)"),
            type=QgsProcessingParameterNumber.Integer, optional=True, minValue=0))
        self._add_advanced(QgsProcessingParameterBoolean(
            self.RAW_NETWORK, tr("Raw network output (do not keep clear pixels unchanged)"),
            defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            self.ADAPT, tr("Adapt to this scene first (fine-tune on its clear pixels; needs "
                           "torch)"), defaultValue=False))
        self._add_advanced(QgsProcessingParameterNumber(
            self.ADAPT_SECONDS, tr("Adaptation budget in seconds"),
            type=QgsProcessingParameterNumber.Double, defaultValue=60.0, minValue=1.0))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, tr("Restored Sentinel-2")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.GATE_OUTPUT, tr("Gate confidence (1 = clear sky)")))

    def _add_advanced(self, parameter):
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def processAlgorithm(self, parameters, context, feedback):
        # Imported here so that listing the Toolbox or loading the plugin never pays for the
        # engine's numpy/rasterio imports.
        from ..adaptation import remove_clouds
        from ..core.engine import RemovalRequest

        aoi, aoi_crs = self._area_of_interest(parameters, context)
        # The engine refuses names other than .tif: the Toolbox only offers .tif, but
        # qgis_process and scripts take any name.
        out_path = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        gate_path = self.parameterAsOutputLayer(parameters, self.GATE_OUTPUT, context)
        request = RemovalRequest(
            s2_path=self._s2_input(parameters, context),
            s1_path=self._raster_file(parameters, self.S1, "Sentinel-1", context),
            out_path=out_path, gate_path=gate_path, aoi=aoi, aoi_crs=aoi_crs,
            model=self.parameterAsFile(parameters, self.MODEL, context) or "default",
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            tile_size=self._optional_int(parameters, self.TILE_SIZE, context),
            overlap=self._optional_int(parameters, self.OVERLAP, context),
            raw_network=self.parameterAsBoolean(parameters, self.RAW_NETWORK, context),
            s2_offset=S2_OFFSETS[self.parameterAsEnum(parameters, self.S2_OFFSET, context)],
            adapt=self.parameterAsBoolean(parameters, self.ADAPT, context),
            adapt_seconds=self.parameterAsDouble(parameters, self.ADAPT_SECONDS, context))
        try:
            result = remove_clouds(request, progress=ProgressRelay(feedback),
                                   is_cancelled=feedback.isCanceled)
        except UserError as exc:
            raise QgsProcessingException(str(exc)) from exc
        for message in result.messages:
            feedback.pushInfo(message)
        feedback.pushInfo(tr("Ran model {} with {} on {}: {} × {} px in {:.1f} s.").format(
            result.model_name, result.backend, result.device.upper(), result.width,
            result.height, result.seconds))
        StyleOnLoad.attach(context, out_path, style_true_colour)
        StyleOnLoad.attach(context, gate_path, style_gate)
        return {self.OUTPUT: out_path, self.GATE_OUTPUT: gate_path}

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        """Let S2 be a product path (a .SAFE folder, .zip, MTD_MSIL1C.xml or band folder),
        which the raster-layer check would refuse because QGIS cannot open it as one layer."""
        if self._s2_product_value(parameters) is None:
            return super().checkParameterValues(parameters, context)
        for definition in self.parameterDefinitions():   # the base check, all but S2
            if definition.name() != self.S2 and not definition.checkValueIsAcceptable(
                    parameters.get(definition.name()), context):
                return False, tr("Incorrect parameter value for {}").format(definition.name())
        return True, ""

    def _s2_product_value(self, parameters):
        """The S2 parameter when it is a path to a Sentinel-2 product or band folder."""
        value = parameters.get(self.S2)
        if not isinstance(value, str) or not value:
            return None
        from ..core.s2_products import is_product_path   # pure Python, no rasterio

        return value if is_product_path(value) else None

    def _s2_input(self, parameters, context):
        """What the engine opens as S2: a product given by path, the product of a loaded
        product sub-layer, or the layer's file (the engine explains what it cannot take)."""
        product = self._s2_product_value(parameters)
        if product is not None:
            return product
        layer = self.parameterAsRasterLayer(parameters, self.S2, context)
        if layer is not None and s2_product_path(layer) is not None:
            return layer.source() if s2_level(layer) != "L1C" else s2_product_path(layer)
        return self._raster_file(parameters, self.S2, "Sentinel-2", context)

    def _raster_file(self, parameters, name, label, context):
        """The layer's file path: the engine streams windows from files with rasterio, so layers
        that are not GDAL files (WMS, PostGIS, virtual…) are refused with what to do instead."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        path = file_path(layer)
        if path is None:
            raise QgsProcessingException(tr(
                "The {} layer '{}' is not a raster file on disk; save it as a GeoTIFF "
                "(Export > Save As…) and choose that file.").format(label, layer.name()))
        return path

    def _area_of_interest(self, parameters, context):
        """(xmin, ymin, xmax, ymax) and its CRS, or (None, None) for the S1 ∩ S2 overlap.

        An extent typed without a CRS (e.g. in qgis_process) has no valid CRS here and is then
        read in the S2 CRS by the engine, as in the CLI.
        """
        rect = self.parameterAsExtent(parameters, self.EXTENT, context)
        if rect.isNull():
            return None, None
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        aoi = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        if not crs.isValid():
            return aoi, None
        return aoi, crs.authid() or crs.toWkt()

    def _optional_int(self, parameters, name, context):
        """None when the user left the number empty, so the engine uses the model's value
        (`parameterAsInt` would turn an empty value into 0)."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsInt(parameters, name, context)


class ProgressRelay:
    """Adapts the engine's `progress(fraction, message)` to a Processing feedback, showing each
    new stage message once rather than on every tile."""

    def __init__(self, feedback):
        self.feedback = feedback
        self.message = None

    def __call__(self, fraction, message=""):
        self.feedback.setProgress(100.0 * fraction)
        if message and message != self.message:
            self.message = message
            self.feedback.setProgressText(message)


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Styles an output as the dock styles its results (true colour, labelled gate ramp) when
    Processing loads it into the project, which happens on the main thread after the run."""

    # Processing holds post-processors by C++ pointer only, and the algorithm copy that ran may
    # be gone by the time layers load, so the Python objects are kept alive here: one small
    # object per output path for the session.
    _alive = {}

    def __init__(self, style):
        super().__init__()
        self.style = style

    @classmethod
    def attach(cls, context, path, style):
        if context.willLoadLayerOnCompletion(path):
            cls._alive[path] = cls(style)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(cls._alive[path])

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            self.style(layer)
