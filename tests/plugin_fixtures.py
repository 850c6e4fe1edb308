"""Fixtures and helpers shared by the QGIS plugin tests (import the fixtures by name).

The plugin runs against pytest-qgis's stub `qgis_iface`: a real main window, canvas and message
bar, with MagicMocks for the menu and toolbar calls, which the tests inspect.
"""
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QEvent

import tiny_models
from sar_cloud_removal import classFactory
from sar_cloud_removal.qgis_provider import SarCloudRemovalProvider
from sar_cloud_removal.ui import settings

SEN12MSCR = Path("sen12mscr")
PATCH = "ROIs2017_winter_112_p797.tif"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test_artifacts"


def add_raster(path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def flush_deletions() -> None:
    """Run the deleteLater() calls queued so far, as QGIS's event loop would."""
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


def wait_for_run(plugin, qtbot, timeout_ms: int = 60_000) -> None:
    qtbot.waitUntil(lambda: plugin.task is None, timeout=timeout_ms)


@pytest.fixture
def provider(qgis_processing):
    """The Processing provider registered for one test, removed after it."""
    provider = SarCloudRemovalProvider()
    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture
def plugin(qgis_iface, qgis_new_project):
    """The plugin loaded as QGIS loads it with no remembered choices, unloaded after the test."""
    QgsSettings().remove(settings.PREFIX.rstrip("/"))
    loaded = classFactory(qgis_iface)
    loaded.initGui()
    yield loaded
    loaded.unload()
    flush_deletions()


@pytest.fixture
def sen12(shared_data, qgis_new_project):
    """The real SEN12MS-CR triplet's cloudy S2 and its S1 (256 × 256 px, same grid), loaded."""
    s2 = add_raster(shared_data / SEN12MSCR / "s2_cloudy" / PATCH, "s2_cloudy")
    s1 = add_raster(shared_data / SEN12MSCR / "s1" / PATCH, "s1")
    return s2, s1


@pytest.fixture
def identity_model(tmp_path) -> str:
    """A tiny ONNX model with 64-px tiles that passes S2 through with a clear-sky gate."""
    return str(tiny_models.identity_onnx(tmp_path / "identity.onnx"))
