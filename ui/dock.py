"""The dock where analysts pick the images, the area and the model, and follow a run.

The dock only gathers choices and shows state; the plugin owns the task. Run stays disabled,
with the reason in the status line, until `input_problem` accepts the inputs, so a run never
starts on inputs the engine would refuse.
"""
import os
from typing import Optional, Sequence

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import (
    QgsCollapsibleGroupBox,
    QgsDockWidget,
    QgsExtentWidget,
    QgsFileWidget,
    QgsMapLayerComboBox,
)
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.model_spec import (DEFAULT_MODEL, MODEL_SUFFIXES, WEIGHTS_DIR, card_headline,
                               list_models)
from . import ICON_PATH, settings
from .dependencies import has_nvidia_gpu, is_installed, torch_install_command
from .i18n import tr
from .layers import matching_s1_layers, overlap_in_s2_crs
from .run_inputs import RunInputs, aoi_size_pixels, input_problem, s2_problem

MODEL_FILE = ""  # model combo data of the "Model file…" entry
HINT_STYLE = "color: #6b6b6b;"
STATUS_STYLE = {"info": "", "warning": "color: #9a5b00;", "error": "color: #b3261e;",
                "success": "color: #1e7b34;"}


class SarCloudRemovalDock(QgsDockWidget):
    run_requested = pyqtSignal()
    cancel_requested = pyqtSignal()
    install_requested = pyqtSignal()
    torch_install_requested = pyqtSignal()

    def __init__(self, iface, parent=None):
        super().__init__(tr("SAR Cloud Removal"), parent)
        self.setObjectName("SarCloudRemovalDock")
        self._iface = iface
        self._missing: Sequence[str] = ()
        self._running = False

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self._build_header())
        layout.addWidget(self._build_dependency_banner())
        layout.addWidget(self._build_inputs())
        layout.addWidget(self._build_aoi())
        layout.addWidget(self._build_model())
        layout.addWidget(self._build_advanced())
        layout.addWidget(self._build_output())
        layout.addStretch(1)
        layout.addLayout(self._build_run_area())
        for combo in content.findChildren(QComboBox):  # long layer names must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # wrap text to the dock width
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(content)
        self.setWidget(scroll)

        self.s2_combo.layerChanged.connect(self._on_s2_changed)
        self.s1_combo.layerChanged.connect(self._on_s1_changed)
        self.aoi_box.extentChanged.connect(self.validate)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.model_file.fileChanged.connect(self.validate)
        self.output_folder.fileChanged.connect(self._on_output_folder_changed)
        self.device_combo.currentIndexChanged.connect(
            lambda: settings.set_device(self.device_combo.currentData()))
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.install_button.clicked.connect(self.install_requested)
        QgsProject.instance().layersAdded.connect(self._on_layers_added)
        self._on_model_changed()
        self._on_layers_added()
        self._reset_aoi()

    # -- construction --------------------------------------------------------------------------

    def _build_header(self) -> QWidget:
        header = QWidget()
        row = QHBoxLayout(header)
        row.setContentsMargins(0, 0, 0, 4)
        icon = QLabel()
        icon.setPixmap(QIcon(ICON_PATH).pixmap(32, 32))
        text = QLabel(tr("<b>Remove clouds from Sentinel-2</b><br>"
                         "using a Sentinel-1 radar image of the same place"))
        text.setWordWrap(True)
        row.addWidget(icon, 0, Qt.AlignTop)
        row.addWidget(text, 1)
        return header

    def _build_dependency_banner(self) -> QWidget:
        self.dependency_banner = QFrame()
        self.dependency_banner.setObjectName("dependencyBanner")
        self.dependency_banner.setStyleSheet(
            "#dependencyBanner { background: #fff4ce; border: 1px solid #e0c060;"
            " border-radius: 4px; }")
        row = QHBoxLayout(self.dependency_banner)
        self.dependency_label = QLabel()
        self.dependency_label.setWordWrap(True)
        self.install_button = QPushButton(tr("Install…"))
        row.addWidget(self.dependency_label, 1)
        row.addWidget(self.install_button, 0, Qt.AlignVCenter)
        self.dependency_banner.hide()
        return self.dependency_banner

    def _build_inputs(self) -> QWidget:
        box = QGroupBox(tr("Images"))
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.WrapAllRows)  # labels above fields keep the dock narrow
        self.s2_combo = QgsMapLayerComboBox()
        self.s2_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.s2_combo.setToolTip(tr("Cloudy Sentinel-2 L1C image, 13 bands B1 to B12 (DN), or "
                                    "a sub-layer of a loaded L1C product (.SAFE folder, .zip or "
                                    "MTD_MSIL1C.xml), which stands for the whole product."))
        self.s1_combo = QgsMapLayerComboBox()
        self.s1_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.s1_combo.setAllowEmptyLayer(True)
        self.s1_combo.setToolTip(tr("Sentinel-1 GRD image, 2 bands VV and VH (dB or linear). "
                                    "A loaded layer overlapping the Sentinel-2 is suggested."))
        self.s1_hint = QLabel()
        self.s1_hint.setWordWrap(True)
        self.s1_hint.setStyleSheet(HINT_STYLE)
        self.s2_offset_combo = QComboBox()
        for label, value in zip((tr("Auto (from the product's metadata)"),
                                 tr("0 (processed before 2022)"),
                                 tr("1000 (processing baseline 04.00+, from 2022)")),
                                settings.S2_OFFSETS):
            self.s2_offset_combo.addItem(label, value)
        self.s2_offset_combo.setToolTip(tr(
            "Sentinel-2 products processed with baseline 04.00 or later (from 25 January 2022) "
            "carry a +1000 DN offset. Auto reads it from the product's metadata, else judges "
            "it from the pixels and asks for this setting when a scene is too cloudy to tell."))
        form.addRow(tr("Sentinel-2 (cloudy)"), self.s2_combo)
        form.addRow(tr("Sentinel-2 DN offset"), self.s2_offset_combo)
        form.addRow(tr("Sentinel-1 (SAR)"), self.s1_combo)
        form.addRow("", self.s1_hint)
        return box

    def _build_aoi(self) -> QWidget:
        box = QGroupBox(tr("Area of interest"))
        column = QVBoxLayout(box)
        self.aoi_box = QgsExtentWidget(None, QgsExtentWidget.CondensedStyle)
        self.aoi_box.setMapCanvas(self._iface.mapCanvas())
        hint = QLabel(tr("Starts as the area both images cover; the … button takes the map "
                         "view, a layer's extent, or an area drawn on the map."))
        hint.setWordWrap(True)
        hint.setStyleSheet(HINT_STYLE)
        column.addWidget(self.aoi_box)
        column.addWidget(hint)
        return box

    def _build_model(self) -> QWidget:
        box = QGroupBox(tr("Model"))
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        self.model_combo = QComboBox()
        # the default first, then the other shipped networks by name
        for name in sorted(list_models(), key=lambda n: (n != DEFAULT_MODEL, n)):
            label = tr("{} (default)").format(name) if name == DEFAULT_MODEL else name
            self.model_combo.addItem(label, name)
            # the card's headline figures, so the choice is made on what the card states
            headline = card_headline(WEIGHTS_DIR / f"{name}.md")
            self.model_combo.setItemData(self.model_combo.count() - 1, headline, Qt.ToolTipRole)
        self.model_combo.addItem(tr("Model file…"), MODEL_FILE)
        self.model_file = QgsFileWidget()
        self.model_file.setFilter(tr("Models") + " (" + " ".join(
            "*" + suffix for suffix in MODEL_SUFFIXES) + ")")
        remembered = settings.model()
        if os.path.splitext(remembered)[1].lower() in MODEL_SUFFIXES:
            self.model_file.setFilePath(remembered)
            remembered = MODEL_FILE
        elif remembered == "default":
            remembered = DEFAULT_MODEL
        self.model_combo.setCurrentIndex(max(0, self.model_combo.findData(remembered)))
        self.device_combo = QComboBox()
        for label, value in zip((tr("Auto"), tr("GPU (CUDA)"), tr("CPU")), settings.DEVICES):
            self.device_combo.addItem(label, value)
        self.device_combo.setToolTip(tr("Auto uses an NVIDIA GPU when one is usable and the CPU "
                                        "otherwise; the device actually used is shown below."))
        self.device_combo.setCurrentIndex(self.device_combo.findData(settings.device()))
        self.device_used = QLabel(tr("not run yet"))
        self.device_used.setStyleSheet(HINT_STYLE)
        self.adapt_check = QCheckBox(tr("Adapt to this scene"))
        self.adapt_seconds = QSpinBox()
        self.adapt_seconds.setRange(5, 3600)
        self.adapt_seconds.setValue(60)
        self.adapt_seconds.setSuffix(" s")
        self.adapt_seconds.setToolTip(tr("Time budget of the adaptation."))
        self.adapt_hint = QLabel()
        self.adapt_hint.setWordWrap(True)
        self.adapt_hint.setStyleSheet(HINT_STYLE)
        self.torch_button = QPushButton(tr("Install torch…"))
        self.torch_button.setToolTip(tr("Install torch for this QGIS, for scene adaptation"))
        self.torch_button.clicked.connect(self.torch_install_requested)
        self.refresh_adaptation()
        adapt_row = QHBoxLayout()
        adapt_row.addWidget(self.adapt_check, 1)
        adapt_row.addWidget(self.adapt_seconds)
        adapt_row.addWidget(self.torch_button)
        form.addRow(tr("Network"), self.model_combo)
        form.addRow(tr("File"), self.model_file)
        form.addRow(tr("Device"), self.device_combo)
        form.addRow(tr("Last run on"), self.device_used)
        form.addRow(adapt_row)
        form.addRow(self.adapt_hint)
        self._model_form = form
        return box

    def refresh_adaptation(self) -> None:
        """The adaptation controls, usable only where torch is installed (found without
        importing it, which would cost seconds at plugin load); where it is not, the button
        that installs it and the command for a terminal. Called again after an install."""
        has_torch = is_installed("torch")
        self.torch_button.setVisible(not has_torch)
        self.adapt_check.setEnabled(has_torch)
        self.adapt_seconds.setEnabled(has_torch)
        self.adapt_check.setToolTip(tr(
            "Before restoring, fine-tune a copy of the network on this scene's own clear pixels "
            "(its radar and optical images of the same date). The copy is used only if it "
            "restores held-out clear pixels better; the message bar says what happened."))
        command = None if has_torch else torch_install_command()
        self.adapt_hint.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.adapt_hint.setText("" if has_torch else tr(
            "Scene adaptation needs the Python package torch, which is not installed for this "
            "QGIS (restoring does not need it). Install it with the button ({}), or run once "
            "and restart QGIS:\n{}").format(
            tr("CUDA build, for your NVIDIA GPU") if has_nvidia_gpu() else tr("CPU build"),
            command or tr("(QGIS's Python was not found)")))
        self.adapt_hint.setVisible(not has_torch)

    def _build_advanced(self) -> QWidget:
        box = QgsCollapsibleGroupBox(tr("Advanced"))
        box.setCollapsed(True)
        form = QFormLayout(box)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setSpecialValueText(tr("Model default"))
        self.tile_spin.setToolTip(tr("Pixels per tile fed to the network; smaller tiles use less "
                                     "memory."))
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(-1, 1024)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setSuffix(" px")
        self.overlap_spin.setSpecialValueText(tr("Model default"))
        self.overlap_spin.setValue(-1)
        self.overlap_spin.setToolTip(tr("Pixels shared by neighbouring tiles, blended to hide "
                                        "seams."))
        self.raw_network_check = QCheckBox(tr("Raw network output"))
        self.raw_network_check.setToolTip(tr(
            "Write the network's output everywhere. By default the pixels the gate finds clear "
            "are copied unchanged from the input: they are that date's observation."))
        form.addRow(tr("Tile size"), self.tile_spin)
        form.addRow(tr("Tile overlap"), self.overlap_spin)
        form.addRow("", self.raw_network_check)
        return box

    def _build_output(self) -> QWidget:
        box = QGroupBox(tr("Output folder"))
        row = QVBoxLayout(box)
        self.output_folder = QgsFileWidget()
        self.output_folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_folder.setFilePath(settings.output_folder())
        self.output_folder.setToolTip(tr("The restored image and its gate-confidence layer are "
                                         "written here as GeoTIFF; nothing is overwritten."))
        row.addWidget(self.output_folder)
        return box

    def _build_run_area(self) -> QVBoxLayout:
        area = QVBoxLayout()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        buttons = QHBoxLayout()
        self.run_button = QPushButton(QIcon(ICON_PATH), tr("Run"))
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        area.addWidget(self.status_label)
        area.addWidget(self.progress_bar)
        area.addLayout(buttons)
        return area

    # -- state ---------------------------------------------------------------------------------

    def release(self) -> None:
        """Disconnect from the project before the plugin unloads (it outlives the dock)."""
        QgsProject.instance().layersAdded.disconnect(self._on_layers_added)

    def current_inputs(self) -> RunInputs:
        model = self.model_combo.currentData()
        if model == MODEL_FILE:
            model = self.model_file.filePath()
        return RunInputs(
            s2=self.s2_combo.currentLayer(), s1=self.s1_combo.currentLayer(),
            output_dir=self.output_folder.filePath(),
            aoi=self.aoi_box.outputExtent(), model=model,
            device=self.device_combo.currentData(),
            tile_size=self.tile_spin.value() or None,
            overlap=None if self.overlap_spin.value() < 0 else self.overlap_spin.value(),
            raw_network=self.raw_network_check.isChecked(),
            adapt=self.adapt_check.isChecked() and self.adapt_check.isEnabled(),
            adapt_seconds=float(self.adapt_seconds.value()),
            s2_offset=self.s2_offset_combo.currentData())

    def prefill(self, s2: Optional[QgsRasterLayer], s1: Optional[QgsRasterLayer]) -> None:
        """Show the layers a one-click run was asked for, so the user only fixes what is wrong."""
        self.s2_combo.setLayer(s2)
        self.s1_combo.setLayer(s1)

    def set_missing_packages(self, missing: Sequence[str]) -> None:
        self._missing = tuple(missing)
        self.dependency_label.setText(tr(
            "<b>Python packages missing:</b> {}.<br>Install them for this QGIS profile to run "
            "the network.").format(", ".join(self._missing)))
        self.dependency_banner.setVisible(bool(self._missing))
        self.validate()

    def set_running(self, running: bool) -> None:
        self._running = running
        self.cancel_button.setEnabled(running)
        if running:
            self.progress_bar.setValue(0)
            self.set_status(tr("Starting…"))
        self.validate()

    def set_progress(self, percent: float) -> None:
        self.progress_bar.setValue(int(round(percent)))

    def set_status(self, text: str, level: str = "info") -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(STATUS_STYLE[level])

    def show_engine_message(self, text: str) -> None:
        """The engine reports in lower case ("tile 3 of 25"); show it as a sentence."""
        self.set_status(text[:1].upper() + text[1:])

    def set_device_used(self, text: str) -> None:
        self.device_used.setText(text)
        self.device_used.setStyleSheet("")

    def validate(self) -> str:
        """Enable Run only for inputs the engine accepts; show why not otherwise."""
        inputs, project = self.current_inputs(), QgsProject.instance()
        problem = input_problem(inputs, project, self._missing)
        self.run_button.setEnabled(not problem and not self._running)
        if self._running:
            return problem
        if problem:
            self.set_status(problem, "warning")
        else:
            width, height = aoi_size_pixels(inputs, project)
            self.set_status(tr("Ready: {} × {} pixels will be processed.").format(width, height))
        return problem

    # -- reactions -----------------------------------------------------------------------------

    def _on_s2_changed(self, s2) -> None:
        self.s2_offset_combo.setCurrentIndex(0)   # an offset set for one scene is not for the next
        self._suggest_s1(s2)
        self._reset_aoi()

    def _on_layers_added(self, layers=()) -> None:
        """Replace an unusable S2 choice by a loaded layer that fits, and suggest the S1 again;
        a usable choice the user made is never changed."""
        s2 = self.s2_combo.currentLayer()
        if s2_problem(s2):
            loaded = list(layers) + list(QgsProject.instance().mapLayers().values())
            fitting = [layer for layer in loaded if not s2_problem(layer)]  # just added first
            # Of a product's sub-layers, the 10 m one (the grid the result is written on).
            fitting.sort(key=lambda layer: ":10m:" not in layer.source())
            if fitting:
                self.s2_combo.setLayer(fitting[0])  # suggests the S1 and resets the AOI
                return
        self._suggest_s1(s2)
        self.validate()

    def _suggest_s1(self, s2) -> None:
        """Pick the S1 among loaded layers that overlap `s2`, unless the current one does."""
        project = QgsProject.instance()
        candidates = matching_s1_layers(s2, project) if isinstance(s2, QgsRasterLayer) else []
        if self.s1_combo.currentLayer() not in candidates:
            self.s1_combo.setLayer(candidates[0] if candidates else None)
        if not isinstance(s2, QgsRasterLayer):
            self.s1_hint.setText("")
        elif len(candidates) > 1:
            self.s1_hint.setText(tr("{} loaded layers overlap this image; check the choice.")
                                 .format(len(candidates)))
        elif not candidates:
            self.s1_hint.setText(tr("No loaded 2-band layer overlaps this image."))
        else:
            self.s1_hint.setText(tr("Suggested: the only loaded 2-band layer overlapping it."))

    def _on_s1_changed(self, _s1) -> None:
        self._reset_aoi()

    def _reset_aoi(self) -> None:
        s2, s1 = self.s2_combo.currentLayer(), self.s1_combo.currentLayer()
        if isinstance(s2, QgsRasterLayer):
            overlap = (overlap_in_s2_crs(s2, s1, QgsProject.instance())
                       if isinstance(s1, QgsRasterLayer) else s2.extent())
            self.aoi_box.setOutputCrs(s2.crs())
            self.aoi_box.setOriginalExtent(overlap, s2.crs())
            canvas = self._iface.mapCanvas()
            self.aoi_box.setCurrentExtent(canvas.extent(), canvas.mapSettings().destinationCrs())
            self.aoi_box.setOutputExtentFromOriginal()
        self.validate()

    def _on_model_changed(self) -> None:
        from_file = self.model_combo.currentData() == MODEL_FILE
        self.model_file.setVisible(from_file)
        self._model_form.labelForField(self.model_file).setVisible(from_file)
        self.validate()

    def _on_output_folder_changed(self, path: str) -> None:
        settings.set_output_folder(path)
        self.validate()
