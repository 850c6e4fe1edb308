"""The Python packages the engine needs, and installing the missing ones for this QGIS profile.

QGIS ships numpy (and on most platforms rasterio) but never onnxruntime or torch. Missing
packages are installed with pip into a folder of the user's profile, never into QGIS's own
Python, and the installer is built so that nothing but what it shows can end up there:

- only the releases in `installer-requirements.txt`, each with the sha256 of every wheel PyPI
  has for it (`--require-hashes`), binary wheels only, and only those missing (`--no-deps`: an
  unpinned dependency could upgrade numpy to 2.x and break QGIS's compiled GDAL bindings);
- from PyPI named explicitly (`--index-url`), with pip's configuration files and environment
  ignored (`--isolated`, `PIP_CONFIG_FILE` set to the null device), so a user's or a site's pip
  settings cannot redirect it to another index or folder;
- run by the very interpreter QGIS runs on (checked: same version and ABI), never a `python3`
  found on PATH, which may be another Python whose wheels would not load in QGIS;
- the dialog lists the packages, versions, index and folder before anything runs.

The check only asks importlib where a package would load from, so the plugin loads quickly and
explains what is missing instead of failing to load.
"""
import os
import re
import shutil
import struct
import subprocess
import sys
from importlib import invalidate_caches
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, Qt, pyqtSignal
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
INDEX_URL = "https://pypi.org/simple"
LOCK_FILE = Path(__file__).with_name("installer-requirements.txt")
# What the installer asks pip for: import name -> the distributions it takes, the package itself
# first, then what it imports at run time (installed only when QGIS lacks them). onnxruntime-gpu
# is published later than onnxruntime, so its newest release is older; both run the ONNX models
# this plugin exports. numpy is never installed: QGIS's own must stay.
DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime",),
    "onnxruntime-gpu": ("onnxruntime-gpu",),
    "rasterio": ("rasterio", "affine", "attrs", "certifi", "click", "cligj", "click-plugins",
                 "snuggs", "pyparsing"),
}


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


def locked_requirements(lock_file: Path = LOCK_FILE) -> Dict[str, str]:
    """{distribution: its requirement block (name==version and its --hash lines)}."""
    blocks, current = {}, None
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+", line)
        if match:
            current = match.group(1).lower()
            blocks[current] = line
        elif current and line.startswith(" "):
            blocks[current] += "\n" + line
        elif not line.strip() or line.startswith("#"):
            current = None
    return blocks


def _installed(distribution: str) -> bool:
    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def plan(missing: Sequence[str], nvidia_gpu: bool, lock_file: Path = LOCK_FILE,
         installed=_installed) -> List[str]:
    """The pinned `name==version` the installer will install for the missing import names:
    each package, and those of its run-time imports QGIS's Python lacks."""
    locked = locked_requirements(lock_file)
    names = []
    for name in missing:
        name = "onnxruntime-gpu" if name == "onnxruntime" and nvidia_gpu else name
        package, *imports = DISTRIBUTIONS[name]
        for distribution in (package, *(d for d in imports if not installed(d))):
            if distribution not in names:
                names.append(distribution)
    return [locked[name].split()[0] for name in names]


def requirements_for(missing: Sequence[str], nvidia_gpu: bool) -> List[str]:
    """The pinned requirements of the missing packages themselves (what the user asked for)."""
    locked = locked_requirements()
    names = ["onnxruntime-gpu" if name == "onnxruntime" and nvidia_gpu else name
             for name in missing]
    return [locked[name].split()[0] for name in names]


def write_requirements(planned: Sequence[str], path: Path, lock_file: Path = LOCK_FILE) -> Path:
    """The hashed requirements file pip installs from: the planned entries of the lock file."""
    locked = locked_requirements(lock_file)
    path.write_text("\n".join(locked[entry.split("==")[0].lower()] for entry in planned) + "\n",
                    encoding="utf-8")
    return path


_IDENTITY = ("import sys, struct; print(sys.implementation.name, sys.version_info[0], "
             "sys.version_info[1], struct.calcsize('P'))")


def _identity_of_this_python() -> str:
    return (f"{sys.implementation.name} {sys.version_info[0]} {sys.version_info[1]} "
            f"{struct.calcsize('P')}")


def _runs_this_python(candidate: Path) -> bool:
    """Whether `candidate` is the same Python as this one (implementation, version, bitness)."""
    try:
        done = subprocess.run([str(candidate), "-I", "-c", _IDENTITY], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == _identity_of_this_python()


def python_interpreter() -> Optional[str]:
    """The Python that runs QGIS's plugins, as a program pip can be run with, or None.

    Inside QGIS `sys.executable` is often QGIS itself (Windows, macOS bundles), so the
    interpreter is looked for beside the running Python's prefix; each candidate must report
    the same implementation, version and bitness as this Python. A `python3` found on PATH is
    never used: it may be another installation, whose wheels would not load in QGIS.
    """
    major, minor = sys.version_info[:2]
    candidates = []
    if os.path.basename(sys.executable).lower().startswith("python"):
        candidates.append(Path(sys.executable))
    for prefix in dict.fromkeys((sys.exec_prefix, sys.base_exec_prefix)):
        base = Path(prefix)
        candidates += [base / "python.exe", base / "bin" / f"python{major}.{minor}",
                       base / "bin" / "python3", base / "bin" / "python"]
    for candidate in candidates:
        if candidate.is_file() and _runs_this_python(candidate):
            return str(candidate)
    return None


def pip_command(python: str, target: Path, requirements_file: Path,
                index_url: Optional[str] = INDEX_URL, find_links: Optional[Path] = None) -> List[str]:
    """The pip call: hash-checked binary wheels of exactly the listed packages, into `target`,
    from `index_url` (or, with `index_url=None`, only from the local folder `find_links`)."""
    source = ["--index-url", index_url] if index_url else ["--no-index"]
    if find_links is not None:
        source += ["--find-links", str(find_links)]
    return [python, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
            "--no-input", "--no-cache-dir", "--only-binary=:all:", "--no-deps",
            "--require-hashes", "--upgrade", "--target", str(target), *source,
            "--requirement", str(requirements_file)]


def pip_environment() -> Dict[str, str]:
    """Environment overrides for pip: no configuration file at all (`--isolated` alone still
    reads the site-wide one, which may name another index or a folder of wheels)."""
    return {"PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1"}


def install_command(missing: Sequence[str], target: Optional[Path] = None,
                    index_url: Optional[str] = INDEX_URL, find_links: Optional[Path] = None,
                    lock_file: Path = LOCK_FILE) -> Optional[List[str]]:
    """The full pip command for this machine (None when QGIS's own Python cannot be found);
    writes the hashed requirements file it refers to, beside the target folder."""
    python = python_interpreter()
    if python is None:
        return None
    target = target or dependencies_folder()
    target.mkdir(parents=True, exist_ok=True)
    planned = plan(missing, has_nvidia_gpu(), lock_file)
    requirements = write_requirements(planned, target.parent / "install-requirements.txt",
                                      lock_file)
    return pip_command(python, target, requirements, index_url, find_links)


# Scene adaptation trains with torch, which the installer does not lock: its CPU build lives on
# PyTorch's own index and its CUDA build needs NVIDIA's libraries, hundreds of MB either way. The
# dock offers it on its own (its dialog says it is not hash-checked), and shows the one command
# for this QGIS, into the same folder, for those who prefer a terminal.
TORCH_REQUIREMENT = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def is_installed(name: str) -> bool:
    """Whether `name` would import, asked of importlib without importing it (torch takes
    seconds)."""
    return find_spec(name) is not None


def torch_install_argv(nvidia_gpu: Optional[bool] = None) -> Optional[List[str]]:
    """The pip command that installs torch for this QGIS (CPU build, or the CUDA build where an
    NVIDIA GPU is present) into the plugin's package folder; None without QGIS's Python."""
    python = python_interpreter()
    if python is None:
        return None
    gpu = has_nvidia_gpu() if nvidia_gpu is None else nvidia_gpu
    index = [] if gpu else ["--index-url", TORCH_CPU_INDEX]
    return [python, "-m", "pip", "install", "--isolated", "--target", str(dependencies_folder()),
            TORCH_REQUIREMENT, *index]


def torch_install_command(nvidia_gpu: Optional[bool] = None) -> Optional[str]:
    """`torch_install_argv` as one line to paste into a terminal."""
    argv = torch_install_argv(nvidia_gpu)
    return None if argv is None else " ".join(f'"{p}"' if " " in p else p for p in argv)


def torch_dialog(parent=None, nvidia_gpu: Optional[bool] = None) -> "DependencyDialog":
    """The install dialog for torch alone, saying what it downloads, from where, and that
    PyTorch's wheels are not checked against a lock as the engine's packages are."""
    gpu = has_nvidia_gpu() if nvidia_gpu is None else nvidia_gpu
    argv = torch_install_argv(gpu)
    intro = tr(
        "Scene adaptation needs <b>torch</b> (restoring does not). <b>Install</b> downloads "
        "<b>{}</b>, the {}, about {} from <code>{}</code>, into this QGIS profile only:<br>"
        "<code>{}</code><br>Unlike the engine's packages, PyTorch's wheels are not checked "
        "against a lock file here.").format(
        TORCH_REQUIREMENT.replace("==", " "),
        tr("CUDA build, for your NVIDIA GPU") if gpu else tr("CPU build"),
        "2.5 GB" if gpu else "200 MB", INDEX_URL if gpu else TORCH_CPU_INDEX,
        dependencies_folder())
    return DependencyDialog(argv, ["torch"], parent, planned=[TORCH_REQUIREMENT], intro=intro)


class DependencyDialog(QDialog):
    """Runs a pip command in a QProcess and shows its log live; QGIS stays usable meanwhile."""

    installed = pyqtSignal()

    def __init__(self, command: Optional[Sequence[str]], missing: Sequence[str], parent=None,
                 planned: Optional[Sequence[str]] = None,
                 environment: Optional[Dict[str, str]] = None, intro: Optional[str] = None):
        super().__init__(parent)
        self.setObjectName("SarCloudRemovalDependencyDialog")
        self.setWindowTitle(tr("SAR Cloud Removal: install Python packages"))
        self.resize(680, 460)
        self._command = list(command or ())
        self.planned = list(planned if planned is not None else
                            plan(missing, has_nvidia_gpu()))
        self._process = QProcess(self)
        self._process.setProcessChannelMode(QProcess.MergedChannels)
        environment = pip_environment() if environment is None else environment
        process_environment = QProcessEnvironment.systemEnvironment()
        for key, value in environment.items():
            process_environment.insert(key, value)
        self._process.setProcessEnvironment(process_environment)
        self._process.readyReadStandardOutput.connect(self._append_output)
        self._process.finished.connect(self._on_finished)
        self._process.errorOccurred.connect(self._on_error)

        # What will be installed, from where and to where, before anything runs.
        self.intro = QLabel(intro or tr(
            "SAR Cloud Removal needs {} to run. <b>Install</b> downloads exactly these "
            "releases, each checked against its published sha256, from <code>{}</code>:"
            "<ul>{}</ul>into this QGIS profile only, leaving QGIS's own packages as they "
            "are:<br><code>{}</code>").format(
            ", ".join(f"<b>{name}</b>" for name in missing), self._index(),
            "".join(f"<li>{entry.replace('==', ' ')}</li>" for entry in self.planned),
            self._target()))
        self.intro.setWordWrap(True)
        self.intro.setTextInteractionFlags(self.intro.textInteractionFlags()
                                           | Qt.TextSelectableByMouse)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.buttons = QDialogButtonBox(self)
        self.install_button = self.buttons.addButton(tr("Install"), QDialogButtonBox.AcceptRole)
        self.buttons.addButton(QDialogButtonBox.Close)
        self.install_button.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        if self._command:
            self.log.setPlainText(" ".join(self._command))
        else:
            self.log.setPlainText(tr(
                "Cannot find the Python interpreter QGIS runs on (looked beside {}), so the "
                "packages cannot be installed from here; install {} for that Python by "
                "hand.").format(sys.exec_prefix, ", ".join(self.planned)))
            self.install_button.setEnabled(False)

        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.log, 1)
        layout.addWidget(self.buttons)

    def _option(self, name: str) -> Optional[str]:
        if name in self._command:
            index = self._command.index(name)
            if index + 1 < len(self._command):
                return self._command[index + 1]
        return None

    def _index(self) -> str:
        return self._option("--index-url") or self._option("--find-links") or INDEX_URL

    def _target(self) -> str:
        return self._option("--target") or str(dependencies_folder())

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
