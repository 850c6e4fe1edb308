"""A dock run end to end: the real engine in a QgsTask on the real SEN12MS-CR pair, the styled
layers it adds, and what a cancel or a refused model leaves behind (nothing)."""
import threading

import numpy as np
import rasterio
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterMinMaxOrigin,
    QgsSingleBandPseudoColorRenderer,
)

from qgis.PyQt.QtCore import Qt

import tiny_models
from plugin_fixtures import identity_model, plugin, sen12, wait_for_run  # noqa: F401


def _start(plugin, sen12, output_dir, model):
    dock = plugin.show_dock()
    dock.s2_combo.setLayer(sen12[0])
    dock.output_folder.setFilePath(str(output_dir))
    dock.model_combo.setCurrentIndex(dock.model_combo.findData(""))
    dock.model_file.setFilePath(model)
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    assert dock.run_button.isEnabled(), dock.status_label.text()
    dock.run_button.click()
    return dock


def _messages(iface, level):
    return iface.messageBar().get_messages(level)


def test_run_adds_styled_layers_in_a_group_above_the_inputs(plugin, sen12, identity_model,
                                                            tmp_path, qtbot, qgis_iface):
    s2, _ = sen12
    dock = _start(plugin, sen12, tmp_path / "out", identity_model)
    assert plugin.task is not None and not dock.run_button.isEnabled()
    assert dock.cancel_button.isEnabled()
    wait_for_run(plugin, qtbot)

    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[0]
    assert group.name() == "Cloud removal: s2_cloudy_cloudfree"
    restored, gate = [node.layer() for node in group.findLayers()]
    assert restored.source() == str(tmp_path / "out" / "s2_cloudy_cloudfree.tif")
    assert gate.source() == str(tmp_path / "out" / "s2_cloudy_cloudfree_gate.tif")

    renderer = restored.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)
    assert renderer.minMaxOrigin().limits() == QgsRasterMinMaxOrigin.CumulativeCut
    with rasterio.open(restored.source()) as dataset:
        red = dataset.read(4)
    for enhancement in (renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
                        renderer.blueContrastEnhancement()):
        assert enhancement.contrastEnhancementAlgorithm() == \
            QgsContrastEnhancement.StretchToMinimumMaximum
        assert enhancement.minimumValue() < enhancement.maximumValue()
    low, high = np.percentile(red, [2, 98])
    assert abs(renderer.redContrastEnhancement().minimumValue() - low) <= 0.02 * (high - low)
    assert abs(renderer.redContrastEnhancement().maximumValue() - high) <= 0.02 * (high - low)

    gate_renderer = gate.renderer()
    assert isinstance(gate_renderer, QgsSingleBandPseudoColorRenderer)
    legend = [label for label, _ in gate_renderer.legendSymbologyItems()]
    assert legend == ["Reconstructed from SAR (cloud)", "Blend of optical and SAR",
                      "Clear sky (optical kept)"]
    assert {node.layer() for node in root.children()[1:]} == set(sen12)  # inputs stay below

    assert dock.device_used.text() == "CPU (onnxruntime)"
    assert dock.progress_bar.value() == 100 and dock.run_button.isEnabled()
    [success] = _messages(qgis_iface, Qgis.Success)
    assert "on CPU (onnxruntime)" in success and "s2_cloudy_cloudfree.tif" in success


def test_the_worker_thread_runs_the_engine(plugin, sen12, identity_model, tmp_path, qtbot):
    """The GUI thread stays free: progress arrives from another thread while the run goes on."""
    _start(plugin, sen12, tmp_path / "out", identity_model)
    threads = set()
    plugin.task.status_changed.connect(lambda _: threads.add(threading.get_ident()),
                                       Qt.DirectConnection)  # runs in the emitting thread
    wait_for_run(plugin, qtbot)
    assert threads and threading.get_ident() not in threads


def test_cancel_right_after_run_leaves_no_layers_and_no_files(plugin, sen12, identity_model,
                                                              tmp_path, qtbot, qgis_iface):
    out = tmp_path / "out"
    dock = _start(plugin, sen12, out, identity_model)
    dock.cancel_button.click()
    wait_for_run(plugin, qtbot)

    assert len(QgsProject.instance().mapLayers()) == 2  # the inputs only
    assert list(out.iterdir()) == []
    assert dock.status_label.text() == "Cancelled; nothing was written."
    assert _messages(qgis_iface, Qgis.Success) == []


def test_cancel_during_the_tiles_leaves_no_layers_and_no_files(plugin, sen12, identity_model,
                                                               tmp_path, qtbot):
    """Cancelled from the worker thread at the first tile, so the engine itself stops."""
    out = tmp_path / "out"
    dock = _start(plugin, sen12, out, identity_model)
    task, seen = plugin.task, []

    def cancel_at_first_tile(message):
        seen.append(message)
        if message.startswith("tile"):
            task.cancel()

    task.status_changed.connect(cancel_at_first_tile, Qt.DirectConnection)
    wait_for_run(plugin, qtbot)

    assert any(message.startswith("tile") for message in seen) and "done" not in seen
    assert len(QgsProject.instance().mapLayers()) == 2
    assert list(out.iterdir()) == []
    assert dock.status_label.text() == "Cancelled; nothing was written."


def test_a_refused_model_is_reported_in_one_sentence(plugin, sen12, identity_model, tmp_path,
                                                     qtbot, qgis_iface):
    broken = str(tiny_models.truncated_copy(identity_model, tmp_path / "broken.onnx"))
    dock = _start(plugin, sen12, tmp_path / "out", broken)
    wait_for_run(plugin, qtbot)

    [critical] = _messages(qgis_iface, Qgis.Critical)
    assert "broken.onnx" in critical and "Traceback" not in critical
    assert critical.endswith(dock.status_label.text())
    assert len(QgsProject.instance().mapLayers()) == 2
    assert list((tmp_path / "out").iterdir()) == []


def test_a_task_outlives_an_unloaded_plugin(plugin, sen12, identity_model, tmp_path, qtbot):
    """Unloading mid-run cancels the task; it still ends cleanly and adds nothing."""
    _start(plugin, sen12, tmp_path / "out", identity_model)
    plugin.unload()
    manager = QgsApplication.taskManager()
    qtbot.waitUntil(lambda: manager.countActiveTasks() == 0, timeout=60_000)
    assert len(QgsProject.instance().mapLayers()) == 2
