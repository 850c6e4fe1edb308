"""SAR Cloud Removal: QGIS plugin entry point (and the `sar_cloud_removal` package root).

Kept free of imports at module level so that the engine and CLI can import the package without
QGIS, and QGIS loads the plugin without torch or onnxruntime.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import SarCloudRemovalPlugin
    return SarCloudRemovalPlugin(iface)
