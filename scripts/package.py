"""Build `dist/sar_cloud_removal.zip`, the plugin as QGIS's "Install from ZIP" and
plugins.qgis.org take it: one `sar_cloud_removal/` folder with only what the plugin runs.

The repository root is both the plugin and the whole project (training, tests, CLI, benchmarks),
so the zip is cut from it by explicit rules rather than shipped as is:

- candidates are the files git knows (tracked, or new and not ignored), so caches, `.venv`,
  outputs and anything else ignored can never slip in;
- INCLUDE picks the plugin's files; EXCLUDE wins over it, as a guard for anything added to an
  included folder later (tests, bench/demo helpers, hidden files);
- local modules imported by included code (even lazily, e.g. the torch networks in `models/`
  that the torch backend rebuilds a .pt with) are added, and an import of an excluded module
  stops the build, so the zip never ships code that fails on import;
- generated files are added: `resources.py` compiled from `resources.qrc` (generated files stay
  out of git), and from `models/weights/` every shipped model's .onnx file and model card (.md),
  and the default model's .pt.

Every shipped model (the default and the seed networks trained beside it) ships as its ONNX file,
which runs with onnxruntime alone (QGIS has no torch by default), so the dock's model list and
Processing offer all of them from the zip. Only the default also ships as its .pt, which scene
adaptation fine-tunes where torch is installed (with the losses, the cloud simulator and the
augmentation it trains with): the seed networks' .pt files would take the zip past the site's
25 MB. A user's own .pt runs from the zip wherever torch is installed.

Usage: `python -m sar_cloud_removal.scripts.package --out dist/sar_cloud_removal.zip`
"""
import argparse
import ast
import fnmatch
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..core.errors import UserError
from ..core.model_spec import DEFAULT_MODEL
from .plugin_validator import check_zip

PLUGIN_ID = "sar_cloud_removal"
REPO = Path(__file__).resolve().parents[1]

INCLUDE = ("__init__.py", "plugin.py", "metadata.txt", "LICENSE", "icon.png",
           "core/*", "qgis_provider/*", "ui/*")
# synthetic/ ships only what scene adaptation uses (clouds, their noise, augmentation): its
# generated scenes are for the demo and the bench.
EXCLUDE = ("*/__pycache__/*", "*.pyc", ".*", "*/.*", "tests/*", "training/*",
           "synthetic/scene.py", "synthetic/landcover.py",
           "scripts/*", "docs/*", "data/*", "*bench*", "*demo*", "cli/*", "*.qrc", "*.ts")
WEIGHTS = "models/weights"
MODEL_FILE = f"{WEIGHTS}/{DEFAULT_MODEL}.onnx"
# The torch weights of the default model: scene adaptation fine-tunes them where torch exists.
MODEL_WEIGHTS = f"{WEIGHTS}/{DEFAULT_MODEL}.pt"
# A fixed timestamp makes two builds of the same tree byte-identical.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def _matches(path: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def repo_files(root: Path = REPO) -> list:
    """The files git knows in `root`: tracked ones still present, plus new, non-ignored ones."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root, capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UserError(f"Cannot list the files of {root} with git ({exc}); build the package "
                        f"from a git checkout.") from exc
    return sorted({p for p in listed.split("\0") if p and (root / p).is_file()})


def _module_path(module: str, known: set):
    """The repo file of a module named relative to the plugin root, or None when not ours."""
    relative = module.replace(".", "/")
    for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
        if candidate in known:
            return candidate
    return None


def _below_root(dotted: str):
    """['core', 'engine'] for 'sar_cloud_removal.core.engine'; None for other packages."""
    parts = dotted.split(".")
    return parts[1:] if parts[0] == PLUGIN_ID else None


def imported_modules(path: str, source: str) -> set:
    """Modules of the plugin, named relative to its root, that the file at `path` imports
    anywhere in its code. For `from x import y` both x and x.y count, since y may be a module."""
    package = list(PurePosixPath(path).parent.parts)
    bases = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            bases += [(_below_root(alias.name), []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            if node.level - 1 <= len(package):
                base = package[:len(package) - node.level + 1]
                bases.append((base + (node.module.split(".") if node.module else []),
                              [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            bases.append((_below_root(node.module), [alias.name for alias in node.names]))
    modules = set()
    for base, names in bases:
        if base is not None:
            modules.add(".".join(base))
            modules |= {".".join(base + [name]) for name in names}
    modules.discard("")
    return modules


def select_files(files: list, root: Path = REPO) -> list:
    """The repo-relative files the zip ships (without the generated ones)."""
    known = set(files)
    chosen = {f for f in files if _matches(f, INCLUDE) and not _matches(f, EXCLUDE)}
    pending = [f for f in chosen if f.endswith(".py")]
    while pending:
        path = pending.pop()
        source = (root / path).read_text(encoding="utf-8")
        targets = {_module_path(m, known) for m in imported_modules(path, source)}
        for target in sorted(targets - chosen - {None}):
            if _matches(target, EXCLUDE):
                raise UserError(f"{path} imports {target}, which the plugin zip leaves out; move "
                                f"that code into the shipped folders or stop importing it.")
            chosen.add(target)
            pending.append(target)
    for path in list(chosen):  # packages of the added modules need their __init__.py
        for parent in PurePosixPath(path).parents:
            init = f"{parent}/__init__.py"
            if str(parent) != "." and init in known:
                chosen.add(init)
    return sorted(chosen)


def compile_resources(root: Path, work: Path) -> dict:
    """{zip path: file} for `resources.py` compiled from `resources.qrc`, when there is one."""
    qrc = root / "resources.qrc"
    if not qrc.is_file():
        return {}
    if shutil.which("pyrcc5") is None:
        raise UserError("pyrcc5 is not installed, so resources.qrc cannot be compiled; run "
                        "`make setup` (it installs pyqt5-dev-tools).")
    target = work / "resources.py"
    subprocess.run(["pyrcc5", "-o", str(target), str(qrc)], cwd=root, check=True)
    return {"resources.py": target}


def model_files(root: Path) -> dict:
    """{zip path: file} for every shipped model's .onnx and card and the default's .pt; git
    may ignore weights, so they come from disk."""
    if not (root / MODEL_FILE).is_file():
        raise UserError(f"The default model file {MODEL_FILE} is missing; train and export it "
                        f"(see README) before packaging.")
    onnx_files = sorted((root / WEIGHTS).glob("*.onnx"))
    chosen = [f"{WEIGHTS}/{p.name}" for p in onnx_files]
    chosen += [f"{WEIGHTS}/{p.stem}.md" for p in onnx_files] + [MODEL_WEIGHTS]
    return {p: root / p for p in chosen if (root / p).is_file()}


def build_package(out: Path, root: Path = REPO) -> list:
    """Write the plugin zip to `out`; returns the zip's entry names. Raises UserError when the
    zip would break an upload rule."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with tempfile.TemporaryDirectory() as work:
            entries = {p: root / p for p in select_files(repo_files(root), root)}
            entries.update(model_files(root))
            entries.update(compile_resources(root, Path(work)))
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
                for name in sorted(entries):
                    info = zipfile.ZipInfo(f"{PLUGIN_ID}/{name}", date_time=ZIP_DATE)
                    info.external_attr = 0o644 << 16  # regular file, not executable
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, entries[name].read_bytes())
        problems = check_zip(partial, PLUGIN_ID)
        if problems:
            raise UserError(f"The plugin zip would break {len(problems)} plugins.qgis.org "
                            f"rule(s), first: {problems[0]}")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return [f"{PLUGIN_ID}/{name}" for name in sorted(entries)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build the QGIS plugin zip.")
    parser.add_argument("--out", type=Path, default=REPO / "dist" / f"{PLUGIN_ID}.zip",
                        help="zip to write (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        names = build_package(args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(names)} files, {args.out.stat().st_size / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
