"""The Python packages the engine needs, and installing the missing ones for this QGIS profile.

QGIS ships numpy (and on most platforms rasterio) but never onnxruntime or torch. Missing
packages are installed with pip into a folder of the user's profile, never into QGIS's own
Python, with a constraints file that pins the packages QGIS already has: an unconstrained
`pip install onnxruntime` may upgrade numpy to 2.x and break QGIS's compiled GDAL bindings.
The check only asks importlib where a package would load from, so the plugin loads quickly and
explains what is missing instead of failing to load.
"""
import os
import shutil
import sys
from importlib import invalidate_caches
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import List, Sequence

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QProcess, pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase, QTextCursor
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
)

from .i18n import tr

REQUIRED = ("numpy", "rasterio")
BACKENDS = ("onnxruntime", "torch")  # the engine needs one of them
# What the installer asks pip for. onnxruntime-gpu is published later than onnxruntime, so its
# newest release is older; both run the ONNX models this plugin exports.
PINNED = {
    "onnxruntime": "onnxruntime==1.32.0",
    "onnxruntime-gpu": "onnxruntime-gpu==1.31.1",
    "rasterio": "rasterio==1.3.11",
    "numpy": "numpy<2",
}
# Packages QGIS brings whose installed version pip must keep (the constraints file).
KEEP_QGIS_VERSIONS = ("numpy", "scipy", "pandas", "attrs", "packaging", "protobuf")


def missing_packages() -> List[str]:
    """Import names the engine needs that cannot be found (the backend counts as onnxruntime)."""
    missing = [name for name in REQUIRED if find_spec(name) is None]
    if all(find_spec(name) is None for name in BACKENDS):
        missing.insert(0, "onnxruntime")
    return missing


def dependencies_folder() -> Path:
    """Where the installer puts packages: per profile, and per Python minor version because
    compiled wheels only load in the Python they were built for."""
    base = Path(QgsApplication.qgisSettingsDirPath()) / "python" / "sar_cloud_removal_deps"
    return base / f"python{sys.version_info.major}.{sys.version_info.minor}"


def register_dependencies_folder() -> None:
    """Make installed packages importable; appended so QGIS's own packages always win."""
    folder = str(dependencies_folder())
    if folder not in sys.path:
        sys.path.append(folder)
    invalidate_caches()


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def requirements_for(missing: Sequence[str], nvidia_gpu: bool) -> List[str]:
    """Pinned pip requirements for the missing import names."""
    names = ["onnxruntime-gpu" if name == "onnxruntime" and nvidia_gpu else name
             for name in missing]
    return [PINNED[name] for name in names]


def constraints_text() -> str:
    """One `name==version` line per package QGIS already has from KEEP_QGIS_VERSIONS."""
    lines = []
    for name in KEEP_QGIS_VERSIONS:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def python_interpreter() -> str:
    """The Python that runs QGIS's plugins, as a program pip can be run with.

    Inside QGIS `sys.executable` is often QGIS itself (Windows, macOS bundles), so look for the
    interpreter beside the running Python's prefix first.
    """
    if os.path.basename(sys.executable).lower().startswith("python"):
        return sys.executable
    for candidate in (Path(sys.exec_prefix) / "python.exe",
                      Path(sys.exec_prefix) / "bin" / "python3",
                      Path(sys.exec_prefix) / "bin" / "python"):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("python3") or shutil.which("python") or sys.executable


def pip_command(python: str, target: Path, requirements: Sequence[str],
                constraints_file: Path) -> List[str]:
    """The pip call: binary wheels only (no compiler on users' machines), into `target`."""
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--only-binary=:all:", "--upgrade", "--target", str(target),
            "--constraint", str(constraints_file), *requirements]


def install_command(missing: Sequence[str]) -> List[str]:
    """The full pip command for this machine; writes the constraints file it refers to."""
    target = dependencies_folder()
    target.mkdir(parents=True, exist_ok=True)
    constraints = target.parent / "qgis-constraints.txt"
    constraints.write_text(constraints_text(), encoding="utf-8")
    return pip_command(python_interpreter(), target,
                       requirements_for(missing, has_nvidia_gpu()), constraints)


class DependencyDialog(QDialog):
    """Runs a pip command in a QProcess and shows its log live; QGIS stays usable meanwhile."""

    installed = pyqtSignal()

    def __init__(self, command: Sequence[str], missing: Sequence[str], parent=None):
        super().__init__(parent)
        self.setObjectName("SarCloudRemovalDependencyDialog")
        self.setWindowTitle(tr("SAR Cloud Removal: install Python packages"))
        self.resize(640, 420)
        self._command = list(command)
        self._process = QProcess(self)
        self._process.setProcessChannelMode(QProcess.MergedChannels)
        self._process.readyReadStandardOutput.connect(self._append_output)
        self._process.finished.connect(self._on_finished)
        self._process.errorOccurred.connect(self._on_error)

        intro = QLabel(tr("SAR Cloud Removal needs {} to run. <b>Install</b> puts pinned "
                          "versions into this QGIS profile only, leaving QGIS's own packages "
                          "as they are:<br><code>{}</code>").format(
            ", ".join(f"<b>{name}</b>" for name in missing), dependencies_folder()))
        intro.setWordWrap(True)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.log.setPlainText(" ".join(self._command))
        self.buttons = QDialogButtonBox(self)
        self.install_button = self.buttons.addButton(tr("Install"), QDialogButtonBox.AcceptRole)
        self.buttons.addButton(QDialogButtonBox.Close)
        self.install_button.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.log, 1)
        layout.addWidget(self.buttons)

    def start(self) -> None:
        self.install_button.setEnabled(False)
        self.log.appendPlainText("")
        self._process.start(self._command[0], self._command[1:])

    def _append_output(self) -> None:
        """Insert output as it comes, chunks joined exactly as pip printed them."""
        text = bytes(self._process.readAllStandardOutput()).decode("utf-8", "replace")
        self.log.moveCursor(QTextCursor.End)
        self.log.insertPlainText(text)
        self.log.ensureCursorVisible()

    def _on_finished(self, exit_code: int, _status) -> None:
        if exit_code == 0:
            register_dependencies_folder()
            self.log.appendPlainText(tr("Done: the packages are installed and ready to use."))
            self.installed.emit()
        else:
            self.log.appendPlainText(tr("pip failed with exit code {}; the log above says why. "
                                        "Fix the cause and click Install again.").format(exit_code))
            self.install_button.setEnabled(True)

    def _on_error(self, _error) -> None:
        if self._process.state() == QProcess.NotRunning:
            self.log.appendPlainText(tr("Could not start {}: {}").format(
                self._command[0], self._process.errorString()))
            self.install_button.setEnabled(True)

    def reject(self) -> None:
        """Closing the dialog stops a running pip instead of leaving it orphaned."""
        if self._process.state() != QProcess.NotRunning:
            self._process.kill()
            self._process.waitForFinished(3000)
        super().reject()
