"""The choices the plugin remembers between sessions (QgsSettings, never the plugin folder,
which a plugin upgrade replaces)."""
import os

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QStandardPaths

PREFIX = "sar_cloud_removal/"
DEVICES = ("auto", "cuda", "cpu")
# The S2 radiometric offset choices of the dock and of Processing's S2_OFFSET, in that order.
# Not remembered between runs: an offset right for one scene is wrong for a scene of another
# year, so every new S2 choice starts from auto (the product's metadata, else its pixels).
S2_OFFSETS = ("auto", "0", "1000")


def default_output_folder() -> str:
    """A folder that outlives the session (results in a temp folder vanish at reboot)."""
    documents = (QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
                 or os.path.expanduser("~"))
    return os.path.join(documents, "SAR Cloud Removal")


def output_folder() -> str:
    return QgsSettings().value(PREFIX + "output_folder", "", str) or default_output_folder()


def set_output_folder(path: str) -> None:
    QgsSettings().setValue(PREFIX + "output_folder", path)


def device() -> str:
    value = QgsSettings().value(PREFIX + "device", "auto", str)
    return value if value in DEVICES else "auto"


def set_device(value: str) -> None:
    QgsSettings().setValue(PREFIX + "device", value)


def model() -> str:
    """The last model run from the dock (a registered name or a file); one-click runs use it."""
    return QgsSettings().value(PREFIX + "model", "default", str) or "default"


def set_model(value: str) -> None:
    QgsSettings().setValue(PREFIX + "model", value)
