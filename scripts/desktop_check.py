"""The real QGIS desktop, with the plugin installed from its zip, driven end to end on a virtual
display: the dock opens, "Remove clouds" on a loaded Sentinel-2 layer adds the results, and a
screenshot shows it.

Unit tests exercise the plugin against pytest-qgis's stub interface; only the real `qgis.bin`
shows that the plugin loads from a fresh profile, finds its dependencies, and runs its task in the
desktop's own event loop. `tests/desktop_startup.py` does the clicking inside QGIS and writes
status.json; this script sets up the profile and the display, waits, and takes the screenshot.

Usage: python -m sar_cloud_removal.scripts.desktop_check --zip dist/sar_cloud_removal.zip \
           --s2 S2.tif --s1 S1.tif [--out test_artifacts]
Exit status 0 when status.json says ok; the screenshot is OUT/desktop.png.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .package import PLUGIN_ID, REPO
from .qgis_profile import enable_plugin, install_plugin
STARTUP = REPO / "tests" / "desktop_startup.py"
SCREEN = "1920x1080x24"
TOOLS = ("Xvfb", "qgis.bin", "import")


def missing_tools() -> list:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@contextmanager
def virtual_display():
    """A fresh Xvfb; `-displayfd` makes it pick a free display number and report it, so
    concurrent checks never collide."""
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", SCREEN,
                             "-nolisten", "tcp"], pass_fds=[write_end],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as reported:
            number = reported.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def wait_for_status(path: Path, qgis: subprocess.Popen, timeout_s: float) -> bool:
    """True once the startup script has finished; False when QGIS quit or time ran out."""
    deadline = time.monotonic() + timeout_s
    while not read_status(path).get("finished"):
        if qgis.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_check(zip_path, s2, s1, out: Path, timeout_s: float = 90) -> dict:
    """Run the desktop check; returns status.json's content (plus `qgis_exit` when QGIS quit
    early or `timed_out`). Writes OUT/status.json, OUT/qgis.log and OUT/desktop.png."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("status.json", "desktop.png", "qgis.log"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "results", ignore_errors=True)  # where the startup script has QGIS write
    with tempfile.TemporaryDirectory() as tmp, virtual_display() as display:
        config = Path(tmp) / "config"
        enable_plugin(install_plugin(zip_path, config), PLUGIN_ID)
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        env = dict(os.environ, DISPLAY=display, XDG_RUNTIME_DIR=str(runtime),
                   PYTHONPATH=sysconfig.get_paths()["purelib"],  # the venv's onnxruntime
                   DESKTOP_CHECK_OUT=str(out), DESKTOP_CHECK_S2=str(Path(s2).resolve()),
                   DESKTOP_CHECK_S1=str(Path(s1).resolve()))
        env.pop("QT_QPA_PLATFORM", None)  # pytest-qgis sets offscreen; QGIS must draw on Xvfb
        with open(out / "qgis.log", "w") as log:
            qgis = subprocess.Popen(["qgis.bin", "--nologo", "--noversioncheck",
                                     "--profiles-path", str(config), "--code", str(STARTUP)],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                finished = wait_for_status(out / "status.json", qgis, timeout_s)
                subprocess.run(["import", "-window", "root", str(out / "desktop.png")],
                               env=env, check=False, timeout=30)
                status = read_status(out / "status.json")
                if qgis.poll() is not None:
                    status["qgis_exit"] = qgis.returncode
                elif not finished:
                    status["timed_out"] = True
            finally:
                stop(qgis)
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, type=Path, help="the plugin zip to install")
    parser.add_argument("--s2", required=True, type=Path, help="cloudy Sentinel-2 GeoTIFF")
    parser.add_argument("--s1", required=True, type=Path, help="Sentinel-1 GeoTIFF")
    parser.add_argument("--out", type=Path, default=REPO / "test_artifacts",
                        help="folder for status.json, qgis.log and desktop.png")
    parser.add_argument("--timeout", type=float, default=90, help="seconds (default 90)")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"error: {', '.join(missing)} not installed; run `make setup`.", file=sys.stderr)
        return 2
    status = run_check(args.zip, args.s2, args.s1, args.out, args.timeout)
    print(json.dumps(status, indent=1))
    return 0 if status.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
