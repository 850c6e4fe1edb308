"""The QGIS face of the plugin: dock, background task, layer handling and dependency installer.

Every module here imports qgis; nothing outside the QGIS face may import this package.
"""
