"""Right-click an S2 layer > Remove clouds: the S1 is found among the loaded layers, and a run
starts with the defaults when exactly one fits; otherwise the dock opens and says why."""
from osgeo import gdal
from qgis.core import QgsProject

from plugin_fixtures import (  # noqa: F401
    PATCH, SEN12MSCR, add_raster, identity_model, plugin, sen12, wait_for_run)
from sar_cloud_removal.ui import settings
from sar_cloud_removal.ui.layers import matching_s1_layers

DSEN2CR_S1 = "sen12mscr_partial/dsen2cr_dsp/s1/ROIs1158_spring_101_30.tif"  # UTM 52N, far away


def _crop(source, target, size):
    """The top-left `size` × `size` pixels of `source`: a smaller overlap with the S2."""
    gdal.Translate(str(target), str(source), srcWin=[0, 0, size, size])
    return target


def _click(plugin, qgis_iface, layer):
    qgis_iface.setActiveLayer(layer)
    plugin.layer_action.trigger()


def test_matching_keeps_overlapping_two_band_layers_largest_overlap_first(sen12, shared_data,
                                                                           tmp_path):
    s2, s1 = sen12
    small = add_raster(_crop(shared_data / SEN12MSCR / "s1" / PATCH, tmp_path / "small.tif", 64),
                       "small_s1")
    add_raster(shared_data / DSEN2CR_S1, "korea_s1")  # 2 bands, but elsewhere
    add_raster(shared_data / SEN12MSCR / "s2" / PATCH, "s2_clear")  # overlaps, but 13 bands

    assert matching_s1_layers(s2, QgsProject.instance()) == [s1, small]


def test_one_match_runs_with_the_remembered_choices(plugin, sen12, identity_model,
                                                                 tmp_path, qtbot, qgis_iface):
    s2, _ = sen12
    out = tmp_path / "remembered"
    settings.set_output_folder(str(out))
    settings.set_model(identity_model)  # the model last run from the dock

    _click(plugin, qgis_iface, s2)
    assert plugin.task is not None and plugin.dock.isHidden()
    assert (plugin.dock.s2_combo.currentLayer(), plugin.dock.s1_combo.currentLayer()) == sen12
    wait_for_run(plugin, qtbot)
    _click(plugin, qgis_iface, s2)
    wait_for_run(plugin, qtbot)

    assert sorted(p.name for p in out.iterdir()) == [
        "s2_cloudy_cloudfree.tif", "s2_cloudy_cloudfree_2.tif",
        "s2_cloudy_cloudfree_2_gate.tif", "s2_cloudy_cloudfree_gate.tif"]
    groups = [node.name() for node in QgsProject.instance().layerTreeRoot().children()[:2]]
    assert groups == ["Cloud removal: s2_cloudy_cloudfree_2", "Cloud removal: s2_cloudy_cloudfree"]


def test_no_match_opens_the_dock_and_says_why(plugin, shared_data, qgis_new_project, qgis_iface):
    s2 = add_raster(shared_data / SEN12MSCR / "s2_cloudy" / PATCH, "s2_cloudy")
    add_raster(shared_data / DSEN2CR_S1, "korea_s1")

    _click(plugin, qgis_iface, s2)

    assert plugin.task is None and not plugin.dock.isHidden()
    assert plugin.dock.s2_combo.currentLayer() is s2
    assert plugin.dock.s1_combo.currentLayer() is None
    assert plugin.dock.status_label.text() == (
        "No loaded 2-band Sentinel-1 layer overlaps 's2_cloudy'; add one and choose it here.")


def test_several_matches_prefill_the_best_and_ask(plugin, sen12, shared_data, tmp_path,
                                                  qgis_iface):
    s2, s1 = sen12
    add_raster(_crop(shared_data / SEN12MSCR / "s1" / PATCH, tmp_path / "small.tif", 64),
               "small_s1")

    _click(plugin, qgis_iface, s2)

    assert plugin.task is None and not plugin.dock.isHidden()
    assert plugin.dock.s1_combo.currentLayer() is s1
    assert plugin.dock.status_label.text() == (
        "2 loaded Sentinel-1 layers overlap 's2_cloudy' (s1, small_s1); check the one chosen "
        "here and click Run.")


def test_a_layer_that_is_not_sentinel_2_is_explained(plugin, sen12, qgis_iface):
    _, s1 = sen12
    _click(plugin, qgis_iface, s1)

    assert plugin.task is None
    assert plugin.dock.status_label.text() == (
        "The Sentinel-2 layer 's1' has 2 band(s); choose a 13-band image (B1 to B12).")
