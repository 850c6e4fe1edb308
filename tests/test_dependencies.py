"""The dependency check, the pip command the installer runs, and the installer dialog's live
log (with a stand-in command: nothing is installed by the tests)."""
import subprocess
import sys
from importlib.metadata import version

import pytest
from qgis.core import Qgis

from plugin_fixtures import plugin  # noqa: F401
from sar_cloud_removal.ui import dependencies
from sar_cloud_removal.ui.dependencies import DependencyDialog


def _without(monkeypatch, *absent):
    real = dependencies.find_spec
    monkeypatch.setattr(dependencies, "find_spec",
                        lambda name: None if name in absent else real(name))


def test_nothing_is_missing_in_the_project_environment():
    assert dependencies.missing_packages() == []


@pytest.mark.parametrize("absent, missing", [
    (("onnxruntime",), []),                      # torch alone is a backend
    (("torch",), []),
    (("onnxruntime", "torch"), ["onnxruntime"]),  # offer the light backend
    (("rasterio",), ["rasterio"]),
    (("onnxruntime", "torch", "numpy"), ["onnxruntime", "numpy"]),
])
def test_missing_packages(monkeypatch, absent, missing):
    _without(monkeypatch, *absent)
    assert dependencies.missing_packages() == missing


def test_requirements_are_pinned_and_gpu_aware():
    assert dependencies.requirements_for(["onnxruntime", "rasterio"], nvidia_gpu=False) == [
        "onnxruntime==1.32.0", "rasterio==1.3.11"]
    assert dependencies.requirements_for(["onnxruntime"], nvidia_gpu=True) == [
        "onnxruntime-gpu==1.31.1"]


def test_constraints_pin_the_numpy_qgis_uses():
    lines = dependencies.constraints_text().splitlines()
    assert f"numpy=={version('numpy')}" in lines
    assert all(line.count("==") == 1 for line in lines)


def test_pip_command_installs_into_the_profile_folder_with_constraints(tmp_path, monkeypatch):
    monkeypatch.setattr(dependencies, "dependencies_folder", lambda: tmp_path / "deps" / "py")
    monkeypatch.setattr(dependencies, "has_nvidia_gpu", lambda: False)
    command = dependencies.install_command(["onnxruntime"])

    constraints = tmp_path / "deps" / "qgis-constraints.txt"
    assert command[1:4] == ["-m", "pip", "install"]
    assert command[command.index("--target") + 1] == str(tmp_path / "deps" / "py")
    assert command[command.index("--constraint") + 1] == str(constraints)
    assert "--only-binary=:all:" in command and command[-1] == "onnxruntime==1.32.0"
    assert f"numpy=={version('numpy')}" in constraints.read_text().splitlines()


def test_the_folder_is_per_profile_and_importable_once_the_plugin_loads(monkeypatch, qgis_iface):
    from sar_cloud_removal import classFactory

    folder = dependencies.dependencies_folder()
    assert folder.parent.name == "sar_cloud_removal_deps"
    assert folder.name == f"python{sys.version_info.major}.{sys.version_info.minor}"
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(folder)])
    classFactory(qgis_iface)
    classFactory(qgis_iface)
    assert sys.path.count(str(folder)) == 1 and sys.path[-1] == str(folder)


def test_python_interpreter_runs_pip():
    python = dependencies.python_interpreter()
    done = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("pip ")


def test_dialog_streams_the_log_and_reports_success(qtbot):
    script = "import sys; print('Collecting onnxruntime'); sys.stdout.flush(); print('Installed')"
    dialog = DependencyDialog([sys.executable, "-c", script], ["onnxruntime"])
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.installed, timeout=10_000):
        dialog.install_button.click()
    log = dialog.log.toPlainText()
    assert "Collecting onnxruntime\nInstalled" in log
    assert log.endswith("Done: the packages are installed and ready to use.")


def test_dialog_reports_a_failed_pip_and_allows_a_retry(qtbot):
    dialog = DependencyDialog([sys.executable, "-c", "import sys; sys.exit(3)"], ["onnxruntime"])
    qtbot.addWidget(dialog)
    dialog.install_button.click()
    qtbot.waitUntil(lambda: "exit code 3" in dialog.log.toPlainText(), timeout=10_000)
    assert dialog.install_button.isEnabled()


def test_plugin_loads_and_explains_when_onnxruntime_and_torch_are_missing(
        monkeypatch, qgis_iface, qgis_new_project):
    from sar_cloud_removal import classFactory

    _without(monkeypatch, "onnxruntime", "torch")
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        [warning] = qgis_iface.messageBar().get_messages(Qgis.Warning)
        assert "Python packages missing: onnxruntime" in warning
        dock = plugin.show_dock()
        assert not dock.dependency_banner.isHidden()
        assert not dock.run_button.isEnabled()
        assert dock.status_label.text() == (
            "Install the missing Python packages first (onnxruntime).")
    finally:
        plugin.unload()
