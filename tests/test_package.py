"""`make package`: the plugin zip holds the plugin and nothing else, passes the plugins.qgis.org
upload rules, and its code runs from the zip alone; plus the rules of the validator itself."""
import configparser
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.scripts import plugin_validator
from sar_cloud_removal.scripts.package import build_package, select_files
from sar_cloud_removal.scripts.plugin_validator import check_zip

REPO = Path(__file__).resolve().parents[1]
TOP = "sar_cloud_removal/"


def names_in(zip_path) -> list:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def zip_metadata(zip_path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        parser.read_string(archive.read(TOP + "metadata.txt").decode("utf-8"))
    return dict(parser.items("general"))


def test_zip_passes_the_upload_rules(plugin_zip):
    assert check_zip(plugin_zip, "sar_cloud_removal") == []


def test_zip_ships_what_the_plugin_runs(plugin_zip):
    names = set(names_in(plugin_zip))
    expected = {"__init__.py", "plugin.py", "metadata.txt", "LICENSE", "icon.png", "resources.py",
                "core/engine.py", "qgis_provider/provider.py", "qgis_provider/remove_clouds.py",
                "ui/dock.py", "models/registry.py", "models/weights/ibhfn.onnx"}
    assert {TOP + name for name in expected} <= names
    with zipfile.ZipFile(plugin_zip) as archive:
        assert b"qt_resource_data" in archive.read(TOP + "resources.py")  # compiled .qrc
        assert archive.read(TOP + "LICENSE") == (REPO / "LICENSE").read_bytes()
        assert archive.read(TOP + "LICENSE").lstrip().startswith(b"GNU GENERAL PUBLIC LICENSE")


def test_zip_leaves_out_the_rest_of_the_project(plugin_zip):
    inside = [name[len(TOP):] for name in names_in(plugin_zip)]
    for folder in ("tests/", "training/", "scripts/", "docs/", "data/", ".venv/"):
        assert not [n for n in inside if n.startswith(folder)], folder
    # synthetic/: the clouds and augmentation scene adaptation trains with, not the generated
    # scenes of the demo and the bench
    assert {n for n in inside if n.startswith("synthetic/")} == {
        "synthetic/__init__.py", "synthetic/clouds.py", "synthetic/noise.py",
        "synthetic/augment.py"}
    assert "adaptation/scene.py" in inside and "models/losses.py" in inside
    assert not [n for n in inside if "__pycache__" in n or n.endswith((".pyc", ".qrc"))]
    assert not [n for n in inside if any(part.startswith(".") for part in n.split("/"))]
    assert not [n for n in inside if n.startswith("cli") or "bench" in n or "demo" in n]
    # models/: the networks, losses and checkpoint I/O; the tools only training uses stay out.
    for training_only in ("models/complexity.py",):
        if (REPO / training_only).exists():
            assert training_only not in inside
    # every shipped model as ONNX with its card (the dock and Processing list them all); only
    # the default as .pt too, which scene adaptation fine-tunes
    weights = {n for n in inside if n.startswith("models/weights/")}
    shipped = sorted(p.stem for p in (REPO / "models" / "weights").glob("*.onnx"))
    assert "ibhfn" in shipped
    expected = {f"models/weights/{name}.{ext}" for name in shipped for ext in ("onnx", "md")}
    assert weights == expected | {"models/weights/ibhfn.pt"}


def test_metadata_declares_the_provider_and_the_project_version(plugin_zip):
    meta = zip_metadata(plugin_zip)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "SAR Cloud Removal"
    assert meta["version"] == project["version"]
    assert meta["hasProcessingProvider"] == "yes"
    assert meta["qgisMinimumVersion"] == "3.22"


def test_build_is_reproducible(tmp_path):
    # Both builds here, back to back: the session's zip may predate edits made since.
    first, second = tmp_path / "first.zip", tmp_path / "second.zip"
    build_package(first)
    build_package(second)
    assert first.read_bytes() == second.read_bytes()


def unpack(zip_path, folder) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    return Path(folder)


def run_from_plugins_folder(plugins: Path, code: str, blocked=()):
    """Run `code` in a fresh Python where `sar_cloud_removal` is the unpacked zip, not this
    checkout, and the `blocked` packages cannot be imported (as in a QGIS that lacks them)."""
    prelude = (
        "import sys\n"
        "from importlib.abc import MetaPathFinder\n"
        "class Block(MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(blocked)!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(plugins)!r})\n"
        "import sar_cloud_removal\n"
        f"assert sar_cloud_removal.__file__.startswith({str(plugins)!r}), "
        "sar_cloud_removal.__file__\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))


def test_every_shipped_module_imports_from_the_zip_alone(plugin_zip, tmp_path):
    plugins = unpack(plugin_zip, tmp_path)
    modules = sorted(name[:-3].replace("/", ".").removesuffix(".__init__")
                     for name in names_in(plugin_zip) if name.endswith(".py"))
    done = run_from_plugins_folder(plugins, f"import importlib\nfor m in {modules!r}:\n"
                                            f"    importlib.import_module(m)\n")
    assert done.returncode == 0, done.stderr[-2000:]


def test_shipped_engine_runs_with_onnxruntime_alone(shared_data, plugin_zip, tmp_path):
    """A stock QGIS plus the plugin's dependency installer has onnxruntime but neither torch
    nor onnx; the default model must run there."""
    plugins = unpack(plugin_zip, tmp_path / "plugins")
    s2 = shared_data / "sen12mscr" / "s2_cloudy" / "ROIs2017_winter_112_p797.tif"
    s1 = shared_data / "sen12mscr" / "s1" / "ROIs2017_winter_112_p797.tif"
    out = tmp_path / "restored.tif"
    done = run_from_plugins_folder(plugins, (
        "from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds\n"
        f"result = remove_clouds(RemovalRequest({str(s2)!r}, {str(s1)!r}, {str(out)!r}))\n"
        "print(result.backend, result.width, result.height)\n"), blocked=("torch", "onnx"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["onnxruntime", "256", "256"]
    assert out.is_file()


def write_tree(root: Path, files: dict) -> list:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return sorted(files)


def test_imported_modules_are_shipped_and_excluded_ones_stop_the_build(tmp_path):
    files = write_tree(tmp_path, {
        "__init__.py": "", "core/__init__.py": "",
        "core/engine.py": "def run():\n    from ..models.registry import build\n",
        "models/__init__.py": "", "models/registry.py": "from .net import Net\n",
        "models/net.py": "", "models/losses.py": "", "training/loop.py": ""})
    assert select_files(files, tmp_path) == ["__init__.py", "core/__init__.py", "core/engine.py",
                                             "models/__init__.py", "models/net.py",
                                             "models/registry.py"]
    (tmp_path / "core/metrics.py").write_text("import sar_cloud_removal.training.loop\n")
    with pytest.raises(UserError, match="core/metrics.py imports training/loop.py"):
        select_files(files + ["core/metrics.py"], tmp_path)


def test_a_missing_default_model_stops_the_build_and_writes_nothing(tmp_path):
    tree = tmp_path / "tree"
    write_tree(tree, {"__init__.py": "", "plugin.py": ""})
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    out = tmp_path / "dist" / "plugin.zip"
    with pytest.raises(UserError, match="default model file models/weights/ibhfn.onnx"):
        build_package(out, root=tree)
    assert list(out.parent.iterdir()) == []


# -- the validator's rules, on a minimal plugin ---------------------------------------------

METADATA = """[general]
name=Cloud Tool
qgisMinimumVersion=3.22
qgisMaximumVersion=3.99
description=Does one thing.
about=Does one thing well.
version=1.0.0
author=Someone
email=someone@example.org
repository=https://example.org/repo
tracker=https://example.org/repo/issues
homepage=https://example.org
icon=icon.png
tags=raster
category=Raster
hasProcessingProvider=no
experimental=False
"""
INIT = "def classFactory(iface):\n    return None\n"


def plugin_files(top="cloud_tool") -> dict:
    return {f"{top}/__init__.py": INIT, f"{top}/metadata.txt": METADATA,
            f"{top}/LICENSE": "GPL-2.0-or-later", f"{top}/icon.png": b"\x89PNG"}


def write_zip(path, files: dict, modes=None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (modes or {}).get(name, 0o644) << 16
            archive.writestr(info, content)
    return path


def with_metadata(**changes) -> dict:
    lines = [line for line in METADATA.splitlines() if line.split("=")[0] not in changes]
    lines += [f"{key}={value}" for key, value in changes.items() if value is not None]
    return {**plugin_files(), "cloud_tool/metadata.txt": "\n".join(lines) + "\n"}


def without(name) -> dict:
    files = plugin_files()
    del files[name]
    return files


BROKEN = {
    "cache folder": ({**plugin_files(), "cloud_tool/__pycache__/x.cpython-311.pyc": b""},
                     "__pycache__ folders"),
    "compiled file": ({**plugin_files(), "cloud_tool/x.pyc": b""}, "compiled or executable"),
    "shared library": ({**plugin_files(), "cloud_tool/lib/x.so": b""}, "compiled or executable"),
    "hidden file": ({**plugin_files(), "cloud_tool/.env": "KEY=1"}, "hidden files"),
    "git folder": ({**plugin_files(), "cloud_tool/.git/HEAD": "x"}, ".git folders"),
    "path escape": ({**plugin_files(), "cloud_tool/../evil.py": ""}, "unsafe path"),
    "no licence": (without("cloud_tool/LICENSE"), "LICENSE is missing"),
    "no metadata": (without("cloud_tool/metadata.txt"), "metadata.txt is missing"),
    "no entry point": ({**plugin_files(), "cloud_tool/__init__.py": "x = 1\n"}, "classFactory"),
    "two folders": ({**plugin_files(), **plugin_files("other_tool")}, "several top folders"),
    "loose file": ({**plugin_files(), "README.md": "x"}, "one plugin folder"),
    "dashed folder": (plugin_files("cloud-tool"), "must be a Python identifier"),
    "missing email": (with_metadata(email=None), "mandatory field 'email'"),
    "missing category": (with_metadata(category=None), "lacks the field 'category'"),
    "placeholder url": (with_metadata(tracker="http://bugs"), "tracker=http://bugs"),
    "slash in author": (with_metadata(author="A/B"), "author must not contain '/'"),
    "bad version": (with_metadata(version="one"), "version=one is not a version"),
    "old qgis": (with_metadata(qgisMinimumVersion="2.18"), "3.0 or later"),
    "bad category": (with_metadata(category="Imagery"), "category=Imagery"),
    "bad provider flag": (with_metadata(hasProcessingProvider="maybe"), "yes or no"),
    "missing icon": (with_metadata(icon="art/logo.png"), "icon=art/logo.png is not in the zip"),
    "qt6 flag": (with_metadata(supportsQt6="True"), "supportsQt6 is deprecated"),
    "not utf-8": ({**plugin_files(), "cloud_tool/metadata.txt": METADATA.encode("utf-16")},
                  "not UTF-8"),
}


def test_minimal_plugin_passes(tmp_path):
    assert check_zip(write_zip(tmp_path / "ok.zip", plugin_files()), "cloud_tool") == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validator_rejects(case, tmp_path):
    files, expected = BROKEN[case]
    problems = check_zip(write_zip(tmp_path / "broken.zip", files))
    assert any(expected in problem for problem in problems), problems


def test_validator_rejects_executable_python_wrong_folder_and_size(tmp_path, monkeypatch):
    executable = write_zip(tmp_path / "x.zip", plugin_files(),
                           modes={"cloud_tool/__init__.py": 0o755})
    assert check_zip(executable) == ["cloud_tool/__init__.py: Python files must not be "
                                     "executable."]
    ok = write_zip(tmp_path / "ok.zip", plugin_files())
    assert check_zip(ok, "sar_cloud_removal") == ["The plugin folder is 'cloud_tool', not the "
                                                  "plugin id 'sar_cloud_removal'."]
    monkeypatch.setattr(plugin_validator, "MAX_ZIP_BYTES", 100)
    assert "the site accepts at most" in check_zip(ok)[0]


def test_validator_rejects_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "x.zip").write_text("not a zip")
    assert "not a readable zip file" in check_zip(tmp_path / "x.zip")[0]
