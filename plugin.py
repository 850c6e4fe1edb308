"""The QGIS plugin object: menu, toolbar and layer actions, the dock, the Processing provider,
and the single background run they share.

Everything the plugin adds to QGIS is removed again in `unload()`, so reloading the plugin (or
disabling it in the Plugin Manager) leaves QGIS as it was.
"""
import os
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsMessageLog, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .ui import ICON_PATH, settings
from .ui.dependencies import missing_packages, register_dependencies_folder
from .ui.dock import SarCloudRemovalDock
from .ui.i18n import tr
from .ui.layers import add_result_layers, matching_s1_layers
from .ui.run_inputs import RunInputs, build_request, input_problem, s2_problem
from .ui.task import LOG_TAG, RemovalTask, RunOutcome

TITLE = "SAR Cloud Removal"
MESSAGE_SECONDS = 10


class SarCloudRemovalPlugin:
    def __init__(self, iface):
        register_dependencies_folder()  # before anything imports onnxruntime (qgis_process too)
        self.iface = iface
        self.provider = None
        self.dock = None
        self.task: Optional[RemovalTask] = None
        self.show_dock_action: Optional[QAction] = None
        self.layer_action: Optional[QAction] = None
        self.missing = []
        self._dependency_dialog = None
        self._torch_dialog = None

    # -- QGIS entry points ---------------------------------------------------------------------

    def initProcessing(self):  # noqa: N802 (QGIS's name); also called by qgis_process
        from .qgis_provider.provider import SarCloudRemovalProvider

        if self.provider is None:
            provider = SarCloudRemovalProvider()
            # The registry takes ownership and deletes a provider it refuses (duplicate id).
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self):  # noqa: N802
        self.initProcessing()
        main_window = self.iface.mainWindow()
        icon = QIcon(ICON_PATH)
        self.show_dock_action = QAction(icon, tr("SAR Cloud Removal…"), main_window)
        self.show_dock_action.setObjectName("SarCloudRemovalShowDock")
        self.show_dock_action.setToolTip(tr("Remove clouds from Sentinel-2 with Sentinel-1"))
        self.show_dock_action.triggered.connect(self.show_dock)
        self.iface.addRasterToolBarIcon(self.show_dock_action)
        self.iface.addPluginToRasterMenu(TITLE, self.show_dock_action)

        self.layer_action = QAction(icon, tr("Remove clouds"), main_window)
        self.layer_action.setObjectName("SarCloudRemovalLayerAction")
        self.layer_action.triggered.connect(self.remove_clouds_from_active_layer)
        self.iface.addCustomActionForLayerType(self.layer_action, "", QgsMapLayerType.RasterLayer,
                                               True)

        self.missing = missing_packages()
        if self.missing:
            self.iface.messageBar().pushMessage(
                TITLE, tr("Python packages missing: {}. Open the SAR Cloud Removal dock to "
                          "install them.").format(", ".join(self.missing)),
                Qgis.Warning, MESSAGE_SECONDS)

    def unload(self):
        if self.task is not None:
            self.task.detach()
            self.task.cancel()
            self.task = None
        if self.layer_action is not None:
            self.iface.removeCustomActionForLayerType(self.layer_action)
            self.layer_action.deleteLater()
            self.layer_action = None
        if self.show_dock_action is not None:
            self.iface.removePluginRasterMenu(TITLE, self.show_dock_action)
            self.iface.removeRasterToolBarIcon(self.show_dock_action)
            self.show_dock_action.deleteLater()
            self.show_dock_action = None
        for dialog in (self._dependency_dialog, self._torch_dialog):
            if dialog is not None:
                dialog.reject()
                dialog.deleteLater()
        self._dependency_dialog = self._torch_dialog = None
        if self.dock is not None:
            self.dock.release()
            self.iface.removeDockWidget(self.dock)
            self.dock.close()
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- dock ----------------------------------------------------------------------------------

    def ensure_dock(self):
        """Create the dock on first use; a one-click run creates it hidden to report progress."""
        if self.dock is None:
            self.dock = SarCloudRemovalDock(self.iface, self.iface.mainWindow())
            self.dock.run_requested.connect(self.run_from_dock)
            self.dock.cancel_requested.connect(self.cancel_run)
            self.dock.install_requested.connect(self.show_dependency_dialog)
            self.dock.torch_install_requested.connect(self.show_torch_dialog)
            self.dock.set_missing_packages(self.missing)
            self.dock.set_running(self.task is not None)
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.hide()
        return self.dock

    def show_dock(self):
        dock = self.ensure_dock()
        dock.show()
        dock.raise_()
        return dock

    def show_dependency_dialog(self):
        from .ui.dependencies import DependencyDialog, install_command

        if self._dependency_dialog is None:
            self._dependency_dialog = DependencyDialog(install_command(self.missing), self.missing,
                                                       self.iface.mainWindow())
            self._dependency_dialog.installed.connect(self._on_dependencies_installed)
        self._dependency_dialog.show()
        self._dependency_dialog.raise_()

    def show_torch_dialog(self):
        """The installer for torch alone (scene adaptation), from the dock's button."""
        from .ui.dependencies import torch_dialog

        if self._torch_dialog is None:
            self._torch_dialog = torch_dialog(self.iface.mainWindow())
            self._torch_dialog.installed.connect(self._on_dependencies_installed)
        self._torch_dialog.show()
        self._torch_dialog.raise_()

    def _on_dependencies_installed(self):
        self.missing = missing_packages()
        if self.dock is not None:
            self.dock.set_missing_packages(self.missing)
            self.dock.refresh_adaptation()

    # -- runs ----------------------------------------------------------------------------------

    def run_from_dock(self):
        inputs = self.dock.current_inputs()
        settings.set_output_folder(inputs.output_dir)
        settings.set_model(inputs.model)
        self.start_run(inputs)

    def remove_clouds_from_active_layer(self):
        self.remove_clouds_from(self.iface.activeLayer())

    def remove_clouds_from(self, s2):
        """One click: run with defaults when exactly one loaded S1 fits, else open the dock
        pre-filled and say what to choose."""
        if self.task is not None:
            self._message(tr("A run is already in progress; wait for it or cancel it."),
                          Qgis.Warning)
            return
        project = QgsProject.instance()
        problem = s2_problem(s2)
        candidates = [] if problem else matching_s1_layers(s2, project)
        inputs = RunInputs(s2=s2, s1=candidates[0] if candidates else None,
                           output_dir=settings.output_folder(), model=settings.model(),
                           device=settings.device())
        problem = (problem or _matching_problem(s2, candidates)
                   or input_problem(inputs, project, self.missing))
        if not problem:
            self.start_run(inputs)
            return
        dock = self.show_dock()
        dock.prefill(inputs.s2, inputs.s1)
        dock.set_status(problem, "warning")

    def start_run(self, inputs: RunInputs):
        dock = self.ensure_dock()
        dock.prefill(inputs.s2, inputs.s1)  # a one-click run shows its layers in the dock too
        try:
            request = build_request(inputs, QgsProject.instance())
        except OSError as error:
            problem = tr("Could not create the output folder '{}' ({}); choose another "
                         "folder.").format(inputs.output_dir, error.strerror)
            dock.set_status(problem, "error")
            self._message(problem, Qgis.Critical)
            return
        self.task = RemovalTask(request, self._on_run_done)
        self.task.progressChanged.connect(dock.set_progress)
        self.task.status_changed.connect(dock.show_engine_message)
        dock.set_running(True)
        QgsApplication.taskManager().addTask(self.task)

    def cancel_run(self):
        if self.task is not None:
            self.dock.set_status(tr("Cancelling…"))
            self.task.cancel()  # a task still queued finishes inside this call

    def _on_run_done(self, outcome: RunOutcome):
        self.task = None
        self.dock.set_running(False)
        if outcome.result is not None:
            self._show_result(outcome.result)
        elif outcome.error is not None:
            self.dock.set_status(outcome.error, "error")
            self._message(outcome.error, Qgis.Critical)
        else:
            self.dock.set_progress(0)
            self.dock.set_status(tr("Cancelled; nothing was written."))
            self._message(tr("Cancelled; nothing was written."), Qgis.Info)

    def _show_result(self, result):
        add_result_layers(QgsProject.instance(), result.out_path, result.gate_path)
        device = tr("{} ({})").format(result.device.upper(), result.backend)
        text = tr("Clouds removed in {:.1f} s on {}: {}").format(
            result.seconds, device, os.path.basename(result.out_path))
        outcome = result.adaptation
        if outcome is not None:
            text += " " + (tr("Adapted to the scene in {:.0f} s: held-out error {:.0%} "
                              "lower.").format(outcome.seconds, outcome.improvement)
                           if outcome.adapted else tr("Not adapted to the scene (details)."))
        self.dock.set_device_used(device)
        self.dock.set_progress(100)
        self.dock.set_status(text, "success")
        notes = [note for note in result.messages if note]
        for note in notes:
            QgsMessageLog.logMessage(note, LOG_TAG, Qgis.Info)
        # The engine's notes (S2 offset, GPU fallback, ...) go under "more", not over the result.
        self.iface.messageBar().pushMessage(TITLE, text, "\n".join(notes), Qgis.Success,
                                            MESSAGE_SECONDS)

    def _message(self, text: str, level) -> None:
        self.iface.messageBar().pushMessage(TITLE, text, level, MESSAGE_SECONDS)


def _matching_problem(s2, candidates) -> str:
    """Why a one-click run needs the user to choose the S1, or "" when one layer fits."""
    if not candidates:
        return tr("No loaded 2-band Sentinel-1 layer overlaps '{}'; add one and choose it "
                  "here.").format(s2.name())
    if len(candidates) > 1:
        return tr("{} loaded Sentinel-1 layers overlap '{}' ({}); check the one chosen here and "
                  "click Run.").format(len(candidates), s2.name(),
                                       ", ".join(layer.name() for layer in candidates))
    return ""
