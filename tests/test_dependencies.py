"""The dependency check, the pip command the installer runs, and the installer dialog's live
log (with a stand-in command: nothing is installed by the tests)."""
import base64
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_every_package_the_installer_may_install_is_locked_with_hashes():
    locked = dependencies.locked_requirements()
    wanted = {name for names in dependencies.DISTRIBUTIONS.values() for name in names}
    assert wanted <= set(locked)
    assert "numpy" not in locked          # QGIS's own numpy must never be replaced
    for name, block in locked.items():
        lines = block.splitlines()
        assert re.fullmatch(rf"{re.escape(name)}==[\w.]+ \\", lines[0]), lines[0]
        assert len(lines) >= 2 and all(re.fullmatch(r"    --hash=sha256:[0-9a-f]{64}( \\)?", l)
                                       for l in lines[1:]), name
    assert len(locked["onnxruntime"].splitlines()) > 5   # a wheel per platform and Python


def test_the_plan_installs_only_what_qgis_lacks():
    assert dependencies.plan(["onnxruntime"], False, installed=lambda name: True) == [
        "onnxruntime==1.32.0"]
    assert dependencies.plan(["rasterio"], False, installed=lambda name: name != "affine") == [
        "rasterio==1.3.11", "affine==2.4.0"]
    everything = dependencies.plan(["onnxruntime", "rasterio"], True,
                                   installed=lambda name: False)
    assert everything[:3] == ["onnxruntime-gpu==1.31.1", "rasterio==1.3.11", "affine==2.4.0"]
    assert len(everything) == 10


def test_pip_command_is_hash_checked_isolated_and_names_its_index(tmp_path, monkeypatch):
    monkeypatch.setattr(dependencies, "dependencies_folder", lambda: tmp_path / "deps" / "py")
    monkeypatch.setattr(dependencies, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(dependencies, "_installed", lambda name: True)
    command = dependencies.install_command(["onnxruntime"])

    requirements = tmp_path / "deps" / "install-requirements.txt"
    assert command[0] == sys.executable and command[1:4] == ["-m", "pip", "install"]
    assert command[command.index("--target") + 1] == str(tmp_path / "deps" / "py")
    assert command[command.index("--index-url") + 1] == "https://pypi.org/simple"
    assert command[command.index("--requirement") + 1] == str(requirements)
    for flag in ("--isolated", "--require-hashes", "--no-deps", "--only-binary=:all:"):
        assert flag in command
    text = requirements.read_text()
    assert text.startswith("onnxruntime==1.32.0 \\\n    --hash=sha256:")
    assert text == dependencies.locked_requirements()["onnxruntime"] + "\n"
    assert dependencies.pip_environment()["PIP_CONFIG_FILE"] == os.devnull


def test_python_interpreter_is_this_python_never_one_on_path(tmp_path, monkeypatch):
    """Inside QGIS sys.executable may be QGIS itself: the interpreter is looked for beside the
    prefix and must be this very Python; a python3 on PATH is never taken."""
    impostor = tmp_path / "path" / "python3"
    impostor.parent.mkdir()
    impostor.write_text("#!/bin/sh\necho cpython 3 99 8\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("PATH", f"{impostor.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "qgis-bin"))
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    monkeypatch.setattr(sys, "exec_prefix", str(prefix))
    monkeypatch.setattr(sys, "base_exec_prefix", str(prefix))
    assert dependencies.python_interpreter() is None
    (prefix / "bin" / "python3").write_text("#!/bin/sh\necho cpython 3 99 8\n")   # other ABI
    (prefix / "bin" / "python3").chmod(0o755)
    assert dependencies.python_interpreter() is None
    real = prefix / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    real.symlink_to(os.path.realpath(sys.__dict__.get("_base_executable", "/usr/bin/python3")))
    assert dependencies.python_interpreter() == str(real)
    assert dependencies.install_command(["onnxruntime"], target=tmp_path / "t")[0] == str(real)


def test_without_qgis_python_the_dialog_explains_and_installs_nothing(qtbot):
    dialog = DependencyDialog(None, ["onnxruntime"], planned=["onnxruntime==1.32.0"])
    qtbot.addWidget(dialog)
    assert not dialog.install_button.isEnabled()
    assert "Cannot find the Python interpreter QGIS runs on" in dialog.log.toPlainText()


def _probe_wheel(folder, value: int) -> Path:
    """A real, minimal wheel `sarcr-probe 1.0` whose module holds `value`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sarcr_probe-1.0-py3-none-any.whl"
    files = {"sarcr_probe/__init__.py": f"VALUE = {value}\n",
             "sarcr_probe-1.0.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: sarcr-probe\nVersion: 1.0\n",
             "sarcr_probe-1.0.dist-info/WHEEL":
                 "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("sarcr_probe-1.0.dist-info/RECORD,,")
    files["sarcr_probe-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _run_installer(qtbot, tmp_path, wheels, digest):
    tmp_path.mkdir(parents=True, exist_ok=True)
    lock = tmp_path / "lock.txt"
    lock.write_text(f"sarcr-probe==1.0 \\\n    --hash=sha256:{digest}\n")
    target = tmp_path / "deps" / "python"
    target.mkdir(parents=True, exist_ok=True)
    requirements = dependencies.write_requirements(["sarcr-probe==1.0"],
                                                   tmp_path / "deps" / "req.txt", lock)
    command = dependencies.pip_command(dependencies.python_interpreter(), target, requirements,
                                       index_url=None, find_links=wheels)
    dialog = DependencyDialog(command, ["sarcr_probe"], planned=["sarcr-probe==1.0"])
    qtbot.addWidget(dialog)
    assert "sarcr-probe 1.0" in dialog.intro.text() and str(target) in dialog.intro.text()
    dialog.install_button.click()
    qtbot.waitUntil(lambda: "Done:" in dialog.log.toPlainText()
                    or "pip failed" in dialog.log.toPlainText(), timeout=120_000)
    return dialog.log.toPlainText(), target


def test_the_real_installer_installs_hash_checked_wheels_whatever_pip_is_configured_to(
        qtbot, tmp_path, monkeypatch):
    """pip runs with a hostile user configuration and environment (a constraint nothing can
    satisfy, another folder of wheels) and must ignore both; a wrong hash must stop it."""
    wheel = _probe_wheel(tmp_path / "wheels", 7)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    _probe_wheel(tmp_path / "evil", 666)
    impossible = tmp_path / "constraints.txt"
    impossible.write_text("sarcr-probe==2.0\n")
    config = tmp_path / "config" / "pip" / "pip.conf"
    config.parent.mkdir(parents=True)
    config.write_text(f"[global]\nconstraint = {impossible}\nfind-links = {tmp_path / 'evil'}\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PIP_CONSTRAINT", str(impossible))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "evil"))

    log, target = _run_installer(qtbot, tmp_path, wheel.parent, digest)
    assert log.endswith("Done: the packages are installed and ready to use."), log
    assert (target / "sarcr_probe" / "__init__.py").read_text() == "VALUE = 7\n"

    log, _ = _run_installer(qtbot, tmp_path / "again", wheel.parent, "0" * 64)
    assert "DO NOT MATCH THE HASHES" in log and "pip failed" in log


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


def test_torch_for_scene_adaptation_is_offered_as_one_command_for_this_qgis():
    from sar_cloud_removal.ui import dependencies

    cpu = dependencies.torch_install_command(nvidia_gpu=False)
    gpu = dependencies.torch_install_command(nvidia_gpu=True)
    python = dependencies.python_interpreter()
    assert cpu.startswith(python) and gpu.startswith(python)
    assert dependencies.TORCH_REQUIREMENT in cpu and str(dependencies.dependencies_folder()) in cpu
    assert dependencies.TORCH_CPU_INDEX in cpu and dependencies.TORCH_CPU_INDEX not in gpu


def test_the_dock_offers_torch_for_scene_adaptation_and_enables_it_once_installed(
        monkeypatch, qgis_iface, qgis_new_project):
    """Without torch the adaptation controls are off and an install button opens a dialog that
    shows the CPU build's command and says it is not hash-checked; once the install reports
    success and torch is found, the controls come on and the button goes."""
    from sar_cloud_removal import classFactory

    _without(monkeypatch, "torch")
    monkeypatch.setattr(dependencies, "has_nvidia_gpu", lambda: False)
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        dock = plugin.show_dock()
        assert not dock.adapt_check.isEnabled() and not dock.torch_button.isHidden()
        assert dependencies.TORCH_CPU_INDEX in dock.adapt_hint.text()
        dock.torch_button.click()
        dialog = plugin._torch_dialog
        assert dialog is not None and dialog.isVisible()
        command = dialog.log.toPlainText()
        assert dependencies.TORCH_REQUIREMENT in command
        assert dependencies.TORCH_CPU_INDEX in command and "--isolated" in command
        assert "not checked against a lock" in dialog.intro.text()
        monkeypatch.setattr(dependencies, "find_spec", importlib.util.find_spec)  # installed
        dialog.installed.emit()
        assert dock.adapt_check.isEnabled() and dock.torch_button.isHidden()
        assert dock.adapt_hint.isHidden()
    finally:
        plugin.unload()
