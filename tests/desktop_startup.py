"""Run inside the real QGIS desktop by `qgis --code` (see scripts/desktop_check.py): drive the
plugin installed from the zip as an analyst would, and record what happened in status.json.

Steps: check the Processing algorithm is listed, open the dock from its toolbar action, load a
real Sentinel-2 + Sentinel-1 pair, click the layer action "Remove clouds" on the Sentinel-2
layer, wait for the two result layers, show the restored image, then set `finished` so the
caller can take the screenshot. Everything runs from timers, so the QGIS event loop (and the
background task) keeps going between steps.
"""
import json
import os
import sys
import time

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QAction, QDockWidget
from qgis.utils import iface, plugins

PLUGIN = "sar_cloud_removal"
OUT = os.environ["DESKTOP_CHECK_OUT"]
TIMEOUT_S = float(os.environ.get("DESKTOP_CHECK_RUN_TIMEOUT", "40"))
status = {"finished": False, "ok": False, "log_errors": []}


def record(**items):
    """Rewrite status.json atomically, so the caller never reads half a file."""
    status.update(items)
    path = os.path.join(OUT, "status.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(status, handle, indent=1, default=str)
    os.replace(path + ".tmp", path)


def on_log(message, tag, level):
    if level == Qgis.Critical:
        status["log_errors"].append(f"{tag}: {message}"[:2000])


def trigger(action_name):
    action = iface.mainWindow().findChild(QAction, action_name)
    if action is None:
        raise LookupError(f"the plugin added no action named {action_name}")
    action.trigger()


def start():
    """Any failure ends the check at once with the reason, instead of waiting for the timeout."""
    try:
        drive_the_plugin()
    except Exception as exc:  # noqa: BLE001 (reported in status.json, not raised into QGIS)
        finish(error=f"{type(exc).__name__}: {exc}")


def drive_the_plugin():
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1920, 1080)  # no window manager under Xvfb to maximise it
    plugin = plugins.get(PLUGIN)
    record(plugin_loaded=plugin is not None,
           plugin_file=sys.modules[type(plugin).__module__].__file__ if plugin else None,
           algorithm_listed=QgsApplication.processingRegistry().algorithmById(
               f"{PLUGIN}:remove_clouds") is not None)
    if plugin is None:
        return finish(error="the plugin was not loaded")
    from sar_cloud_removal.ui import settings  # the plugin's own module, from the profile

    # Results go to the check's folder instead of ~/Documents.
    settings.set_output_folder(os.path.join(OUT, "results"))
    os.makedirs(os.path.join(OUT, "results"), exist_ok=True)

    trigger("SarCloudRemovalShowDock")
    dock = window.findChild(QDockWidget, "SarCloudRemovalDock")
    record(dock_visible=bool(dock and dock.isVisible()))
    if dock is not None:  # as a user would drag it wider, so the screenshot shows its content
        window.resizeDocks([dock], [540], Qt.Horizontal)

    project = QgsProject.instance()
    s1 = QgsRasterLayer(os.environ["DESKTOP_CHECK_S1"], "Sentinel-1 VV VH")
    s2 = QgsRasterLayer(os.environ["DESKTOP_CHECK_S2"], "Sentinel-2 cloudy")
    project.addMapLayers([s1, s2])
    record(inputs_valid=s1.isValid() and s2.isValid(), input_ids=[s1.id(), s2.id()])
    iface.setActiveLayer(s2)
    iface.mapCanvas().setExtent(s2.extent())
    trigger("SarCloudRemovalLayerAction")
    wait_for_results(time.monotonic())


def result_layers():
    return [layer for layer in QgsProject.instance().mapLayers().values()
            if layer.id() not in status["input_ids"]]


def wait_for_results(started):
    layers = result_layers()
    if len(layers) >= 2:
        return show_results(layers, time.monotonic() - started)
    if time.monotonic() - started > TIMEOUT_S:
        return finish(error=f"no result layers after {TIMEOUT_S:.0f} s")
    QTimer.singleShot(250, lambda: wait_for_results(started))


def show_results(layers, seconds):
    record(run_seconds=round(seconds, 1), results=[{
        "name": layer.name(), "source": layer.source(), "valid": layer.isValid(),
        "bands": layer.bandCount(), "width": layer.width(), "height": layer.height(),
        "crs": layer.crs().authid()} for layer in layers])
    # Show the result group's layers and legend rather than the inputs' band lists (toggled, as
    # the view ignores setting the state a node already has).
    for node in QgsProject.instance().layerTreeRoot().children():
        node.setExpanded(False)
        node.setExpanded(node.name().startswith("Cloud removal"))
    canvas = iface.mapCanvas()
    canvas.setExtent(layers[0].extent())
    canvas.refresh()
    # Give the canvas time to render the restored image before the screenshot.
    QTimer.singleShot(2500, finish)


def finish(error=None):
    dock = iface.mainWindow().findChild(QDockWidget, "SarCloudRemovalDock")
    messages = [item.text() for item in iface.messageBar().items()]
    results = status.get("results", [])
    ok = (error is None and status.get("dock_visible") and status.get("inputs_valid")
          and status.get("algorithm_listed")
          and len(results) == 2 and all(r["valid"] for r in results)
          and not status["log_errors"])
    record(finished=True, ok=bool(ok), error=error, messages=messages,
           dock_still_visible=bool(dock and dock.isVisible()),
           window=iface.mainWindow().geometry().getRect())


QgsApplication.messageLog().messageReceived.connect(on_log)
QTimer.singleShot(500, start)
