"""One translation context for every user-visible string of the plugin.

A single context keeps the future .ts file flat, so translators see each sentence once.
"""
from qgis.PyQt.QtCore import QCoreApplication

CONTEXT = "SarCloudRemoval"


def tr(text: str) -> str:
    return QCoreApplication.translate(CONTEXT, text)
