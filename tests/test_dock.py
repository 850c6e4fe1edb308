"""The dock's validation: Run is enabled only for inputs the engine accepts, and otherwise the
status line says which input is wrong."""
import tempfile

from osgeo import gdal
from qgis.core import QgsRectangle
from qgis.gui import QgsExtentWidget
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtWidgets import QToolButton

from plugin_fixtures import ARTIFACTS, PATCH, SEN12MSCR, add_raster, plugin, sen12  # noqa: F401
from sar_cloud_removal.ui import settings

DSEN2CR_S1 = "sen12mscr_partial/dsen2cr_dsp/s1/ROIs1158_spring_101_30.tif"  # UTM 52N, far away


def _dock(plugin, tmp_path):
    dock = plugin.show_dock()
    dock.output_folder.setFilePath(str(tmp_path / "results"))
    return dock


def _is_runnable(dock):
    return dock.run_button.isEnabled()


def test_s1_is_suggested_and_the_aoi_defaults_to_the_overlap(plugin, sen12, tmp_path):
    s2, s1 = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)

    assert dock.s1_combo.currentLayer() is s1
    assert dock.aoi_box.outputExtent().toString(3) == s2.extent().toString(3)  # box rounds
    assert dock.aoi_box.outputCrs() == s2.crs()
    assert _is_runnable(dock)
    assert dock.status_label.text() == "Ready: 256 × 256 pixels will be processed."


def test_a_smaller_aoi_is_what_gets_processed(plugin, sen12, tmp_path):
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    extent = s2.extent()
    half = QgsRectangle(extent.xMinimum(), extent.yMinimum(),
                        extent.xMinimum() + extent.width() / 2, extent.yMaximum())
    dock.aoi_box.setOutputExtentFromUser(half, s2.crs())

    assert dock.current_inputs().aoi.toString(3) == half.toString(3)
    assert dock.status_label.text() == "Ready: 128 × 256 pixels will be processed."


def test_layers_loaded_after_the_dock_opened_are_suggested(plugin, shared_data, tmp_path):
    """As in the desktop: the dock is open first, then the S1 and the S2 are loaded."""
    dock = _dock(plugin, tmp_path)
    s1 = add_raster(shared_data / SEN12MSCR / "s1" / PATCH, "s1")
    assert dock.s2_combo.currentLayer() is s1  # QGIS picks the only raster; it cannot be used
    assert not _is_runnable(dock)
    s2 = add_raster(shared_data / SEN12MSCR / "s2_cloudy" / PATCH, "s2_cloudy")

    assert (dock.s2_combo.currentLayer(), dock.s1_combo.currentLayer()) == (s2, s1)
    assert _is_runnable(dock)
    add_raster(shared_data / SEN12MSCR / "s2" / PATCH, "s2_clear")
    assert dock.s2_combo.currentLayer() is s2  # a usable choice is kept


def test_a_layer_that_is_no_file_is_refused(plugin, sen12, shared_data, tmp_path):
    _, s1 = sen12
    gdal.Translate("/vsimem/s2_in_memory.tif", str(shared_data / SEN12MSCR / "s2_cloudy" / PATCH))
    try:
        in_memory = add_raster("/vsimem/s2_in_memory.tif", "s2_in_memory")
        dock = _dock(plugin, tmp_path)
        dock.prefill(in_memory, s1)
        assert not _is_runnable(dock)
        assert dock.status_label.text() == ("The Sentinel-2 layer 's2_in_memory' is not a file on "
                                             "disk; save it as a GeoTIFF and choose that layer.")
    finally:
        gdal.Unlink("/vsimem/s2_in_memory.tif")


def test_the_aoi_can_come_from_the_canvas_a_layer_or_a_drawing(plugin, sen12, tmp_path,
                                                               qgis_canvas):
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    [menu_button] = dock.aoi_box.findChildren(QToolButton, "mCondensedToolButton")
    choices = {action.text(): action for action in menu_button.menu().actions()}
    assert {"Use Map Canvas Extent", "Calculate from Layer", "Draw on Canvas"} <= set(choices)

    qgis_canvas.setDestinationCrs(s2.crs())
    qgis_canvas.setExtent(s2.extent().buffered(-s2.extent().width() / 4))  # about the middle
    choices["Use Map Canvas Extent"].trigger()
    assert dock.aoi_box.extentState() == QgsExtentWidget.CurrentExtent
    seen = qgis_canvas.extent().intersect(s2.extent())  # the canvas keeps its own aspect ratio
    assert dock.status_label.text() == "Ready: {} × {} pixels will be processed.".format(
        round(seen.width() / 10), round(seen.height() / 10))
    assert seen.area() < s2.extent().area() and _is_runnable(dock)


def test_missing_s1_is_explained(plugin, shared_data, qgis_new_project, tmp_path):
    s2 = add_raster(shared_data / SEN12MSCR / "s2_cloudy" / PATCH, "s2_cloudy")
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)

    assert dock.s1_combo.currentLayer() is None
    assert not _is_runnable(dock)
    assert dock.status_label.text() == "Choose a Sentinel-1 layer."
    assert dock.s1_hint.text() == "No loaded 2-band layer overlaps this image."


def test_wrong_band_counts_are_explained(plugin, sen12, tmp_path):
    s2, s1 = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s1)
    dock.s1_combo.setLayer(s1)
    assert not _is_runnable(dock)
    assert dock.status_label.text() == (
        "The Sentinel-2 layer 's1' has 2 band(s); choose a 13-band image (B1 to B12).")

    dock.s2_combo.setLayer(s2)
    dock.s1_combo.setLayer(s2)
    assert not _is_runnable(dock)
    assert dock.status_label.text() == (
        "The Sentinel-1 layer 's2_cloudy' has 13 band(s); choose a 2-band image (VV, VH).")


def test_images_of_different_places_are_refused(plugin, sen12, shared_data, tmp_path):
    s2, _ = sen12
    far_s1 = add_raster(shared_data / DSEN2CR_S1, "korea_s1")
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    dock.s1_combo.setLayer(far_s1)

    assert not _is_runnable(dock)
    assert dock.status_label.text().startswith(
        "The Sentinel-1 and Sentinel-2 layers do not overlap")


def test_aoi_outside_the_images_is_refused(plugin, sen12, tmp_path):
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    far = QgsRectangle(s2.extent())
    far.setXMinimum(far.xMaximum() + 1000)
    far.setXMaximum(far.xMaximum() + 5000)
    dock.aoi_box.setOutputExtentFromUser(far, s2.crs())

    assert not _is_runnable(dock)
    assert dock.status_label.text().startswith("The area of interest lies outside")


def test_unwritable_output_folder_is_refused(plugin, sen12, tmp_path):
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    a_file = tmp_path / "notes.txt"  # a folder cannot be made below a file, even by root
    a_file.write_text("")
    dock.output_folder.setFilePath(str(a_file / "results"))

    assert not _is_runnable(dock)
    assert dock.status_label.text().startswith("The output folder")
    dock.output_folder.setFilePath(str(tmp_path / "new" / "results"))
    assert _is_runnable(dock)
    assert settings.output_folder() == str(tmp_path / "new" / "results")


def test_missing_packages_disable_run_and_offer_the_installer(plugin, sen12, tmp_path):
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    dock.set_missing_packages(["onnxruntime"])

    assert not dock.dependency_banner.isHidden()
    assert "onnxruntime" in dock.dependency_label.text()
    assert not _is_runnable(dock)
    assert dock.status_label.text() == "Install the missing Python packages first (onnxruntime)."
    dock.set_missing_packages([])
    assert dock.dependency_banner.isHidden() and _is_runnable(dock)


def test_model_file_choice_and_advanced_values_reach_the_run(plugin, sen12, tmp_path):
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    dock.model_combo.setCurrentIndex(dock.model_combo.findData(""))
    assert not dock.model_file.isHidden()
    assert dock.status_label.text() == "Choose a model file (.onnx or .pt)."
    dock.model_file.setFilePath(str(tmp_path / "missing.onnx"))
    assert dock.status_label.text().startswith("The model file")

    dock.tile_spin.setValue(128)
    dock.overlap_spin.setValue(0)
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    inputs = dock.current_inputs()
    assert (inputs.tile_size, inputs.overlap, inputs.device) == (128, 0, "cpu")
    assert settings.device() == "cpu"
    dock.tile_spin.setValue(0)
    dock.overlap_spin.setValue(-1)
    inputs = dock.current_inputs()
    assert (inputs.tile_size, inputs.overlap) == (None, None)  # the model's own values


def test_every_shipped_model_is_offered_with_its_cards_headline(plugin, sen12, tmp_path):
    """The seed networks are chosen by name like the default; hovering one shows the figures
    its card states, and the choice reaches the run."""
    from sar_cloud_removal.core.model_spec import WEIGHTS_DIR, card_headline, list_models

    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    offered = [dock.model_combo.itemData(i) for i in range(dock.model_combo.count())]
    assert offered[0] == "ibhfn" and dock.model_combo.itemText(0) == "ibhfn (default)"
    assert sorted(offered[:-1]) == list_models() and offered[-1] == ""
    for index, name in enumerate(offered[:-1]):
        tooltip = dock.model_combo.itemData(index, Qt.ToolTipRole)
        assert tooltip == card_headline(WEIGHTS_DIR / f"{name}.md")
        assert not tooltip.startswith("no ")
        dock.model_combo.setCurrentIndex(index)
        assert dock.current_inputs().model == name


def test_dock_renders(plugin, sen12, tmp_path):
    """Renders the dock offscreen into test_artifacts/dock.png for people to look at."""
    s2, _ = sen12
    dock = _dock(plugin, tmp_path)
    dock.s2_combo.setLayer(s2)
    dock.resize(QSize(360, 1000))
    ARTIFACTS.mkdir(exist_ok=True)
    image = dock.grab()
    assert image.save(str(ARTIFACTS / "dock.png"))
    assert image.width() == 360


def test_the_default_output_folder_outlives_the_session():
    folder = settings.default_output_folder()
    assert folder.endswith("SAR Cloud Removal")
    assert not folder.startswith(tempfile.gettempdir())
