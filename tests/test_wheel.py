"""`pip install .` works: the wheel holds the whole package with the shipped model and declares
its runtime dependencies, and `sar-cloud-removal remove` runs from a fresh virtual environment
where nothing of the repository is importable.

Offline and quick: the wheel is built from the files git knows (as a fresh clone has them) with
the project's own setuptools, and the fresh venv gets the declared runtime dependencies linked in
from this environment (what pip would install from the index), nothing else: no torch, no
repository on the path.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
import rasterio

import georasters
from sar_cloud_removal.scripts.package import repo_files

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("clone")
    for relative in repo_files(REPO):
        target = source / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dist), str(source)], check=True, timeout=300)
    [built] = dist.glob("sar_cloud_removal-*.whl")
    return built


def _requirements(wheel: Path) -> list:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(name).decode())
    return meta.get_all("Requires-Dist") or []


def test_the_wheel_holds_the_whole_package_and_the_shipped_model(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for package in ("core", "models", "cli", "ui", "qgis_provider", "synthetic", "training"):
        assert f"sar_cloud_removal/{package}/__init__.py" in names, package
    for data in ("models/weights/ibhfn.onnx", "models/weights/ibhfn.md", "metadata.txt",
                 "icon.png", "core/engine.py", "core/s2_products.py",
                 "ui/installer-requirements.txt"):
        assert f"sar_cloud_removal/{data}" in names, data
    assert not any(name.startswith(("sar_cloud_removal/tests/", "tests/")) for name in names)
    runtime = [r for r in _requirements(wheel) if "extra ==" not in r]
    assert {re.split(r"[<>=!~; ]", r, 1)[0] for r in runtime} == {"numpy", "rasterio",
                                                                   "onnxruntime"}


def _link_distribution(name: str, site: Path, done: set) -> None:
    """Make distribution `name` (and what it requires) installed in `site`, by linking the
    files this environment has for it, unless the system Python already provides it."""
    key = name.lower().replace("_", "-")
    if key in done:
        return
    done.add(key)
    probe = subprocess.run([SYSTEM_PYTHON, "-c", f"import importlib.metadata as m; "
                            f"m.distribution({name!r})"], capture_output=True)
    if probe.returncode == 0:
        return   # the fresh venv sees the system's (numpy, rasterio from Debian)
    dist = metadata.distribution(name)
    root = Path(dist.locate_file(""))
    tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
    for top in tops:
        if not (site / top).exists():
            (site / top).symlink_to(root / top)
    for requirement in dist.requires or ():
        if "extra ==" in requirement:
            continue
        _link_distribution(re.split(r"[<>=!~; \[(]", requirement, 1)[0], site, done)


def test_sar_cloud_removal_remove_runs_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, timeout=300)
    done = set()
    for requirement in _requirements(wheel):
        if "extra ==" not in requirement:
            _link_distribution(re.split(r"[<>=!~; ]", requirement, 1)[0], site, done)

    s2, s1 = georasters.pair(tmp_path, rows=64, cols=64)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    where = subprocess.run([str(python), "-c", "import sar_cloud_removal, importlib.util as u; "
                            "print(sar_cloud_removal.__file__, u.find_spec('torch'))"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert where.stdout.startswith(str(venv)) and where.stdout.split()[-1] == "None"
    done = subprocess.run([str(venv / "bin" / "sar-cloud-removal"), "remove", "--s2", str(s2),
                           "--s1", str(s1), "--out", str(tmp_path / "restored.tif"),
                           "--s2-offset", "0", "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    with rasterio.open(tmp_path / "restored.tif") as out:
        assert (out.count, out.width, out.height) == (13, 64, 64)
    assert (tmp_path / "restored_gate.tif").is_file()
