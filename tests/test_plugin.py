"""The plugin as QGIS loads it: what initGui adds, and that unload takes all of it away."""
from qgis.core import QgsApplication, QgsMapLayerType, QgsProject
from qgis.PyQt.QtWidgets import QAction, QDockWidget

from plugin_fixtures import flush_deletions
from sar_cloud_removal import classFactory
from sar_cloud_removal.plugin import TITLE, SarCloudRemovalPlugin

PROVIDER_ID = "sar_cloud_removal"


def _provider():
    return QgsApplication.processingRegistry().providerById(PROVIDER_ID)


def _plugin_children(main_window):
    docks = main_window.findChildren(QDockWidget, "SarCloudRemovalDock")
    actions = [action for action in main_window.findChildren(QAction)
               if action.objectName().startswith("SarCloudRemoval")]
    return docks + actions


def test_class_factory_returns_the_plugin(qgis_iface):
    assert isinstance(classFactory(qgis_iface), SarCloudRemovalPlugin)


def _project_receivers():
    project = QgsProject.instance()
    return project.receivers(project.layersAdded)


def test_init_gui_then_unload_leaves_nothing_behind(qgis_iface, qgis_new_project):
    receivers = _project_receivers()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    dock = plugin.show_dock()

    assert _provider() is plugin.provider
    assert [alg.id() for alg in _provider().algorithms()] == [f"{PROVIDER_ID}:remove_clouds"]
    show_action, layer_action = plugin.show_dock_action, plugin.layer_action
    qgis_iface.addPluginToRasterMenu.assert_called_once_with(TITLE, show_action)
    qgis_iface.addRasterToolBarIcon.assert_called_once_with(show_action)
    qgis_iface.addCustomActionForLayerType.assert_called_once_with(
        layer_action, "", QgsMapLayerType.RasterLayer, True)
    assert layer_action.text() == "Remove clouds"
    assert qgis_iface.mainWindow().findChild(QDockWidget, "SarCloudRemovalDock") is dock
    dock.hide()
    show_action.trigger()
    assert not dock.isHidden()  # the stub's main window is never shown, so isVisible() is False

    plugin.unload()
    flush_deletions()

    qgis_iface.removePluginRasterMenu.assert_called_once_with(TITLE, show_action)
    qgis_iface.removeRasterToolBarIcon.assert_called_once_with(show_action)
    qgis_iface.removeCustomActionForLayerType.assert_called_once_with(layer_action)
    assert _provider() is None
    assert _plugin_children(qgis_iface.mainWindow()) == []
    assert _project_receivers() == receivers


def test_reloading_registers_everything_once_again(qgis_iface, qgis_new_project):
    """Plugin Reloader does unload + classFactory + initGui; nothing may pile up."""
    for _ in range(2):
        plugin = classFactory(qgis_iface)
        plugin.initGui()
        plugin.show_dock()
        plugin.unload()
        flush_deletions()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    plugin.show_dock()
    assert len(_plugin_children(qgis_iface.mainWindow())) == 3  # dock + two actions
    plugin.unload()
    flush_deletions()
    assert _plugin_children(qgis_iface.mainWindow()) == []


def test_init_processing_alone_registers_the_provider(qgis_iface):
    """qgis_process calls only classFactory + initProcessing, never initGui."""
    plugin = classFactory(qgis_iface)
    plugin.initProcessing()
    plugin.initProcessing()
    assert _provider() is plugin.provider
    plugin.unload()
    assert _provider() is None
