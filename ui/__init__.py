"""The QGIS face of the plugin: dock, background task, layer handling and dependency installer.

Every module here imports qgis; nothing outside the QGIS face may import this package.
"""
import os

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icon.png")
