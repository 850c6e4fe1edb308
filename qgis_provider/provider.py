"""The Processing provider that puts the plugin's algorithm in the Toolbox, batch mode, the
modeler and `qgis_process`."""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..ui import ICON_PATH
from .remove_clouds import RemoveCloudsAlgorithm


class SarCloudRemovalProvider(QgsProcessingProvider):
    """Provider `sar_cloud_removal`; the plugin registers it in `initProcessing()`."""

    def id(self):
        return "sar_cloud_removal"

    def name(self):
        return "SAR Cloud Removal"

    def icon(self):
        return QIcon(str(ICON_PATH))

    def loadAlgorithms(self):
        self.addAlgorithm(RemoveCloudsAlgorithm())

    def supportedOutputRasterLayerExtensions(self):
        """The engine writes GeoTIFF only, so the Toolbox's file dialogs offer .tif alone."""
        return ["tif"]
