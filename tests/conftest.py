"""Shared test fixtures: where the real Sentinel data lives, and running the real CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# QGIS computes layer statistics and GDAL would cache them as .aux.xml files beside the inputs,
# that is inside the read-only shared data; child processes (qgis_process, the desktop) inherit it.
os.environ["GDAL_PAM_ENABLED"] = "NO"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAR_CR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Sentinel-1/2 samples in ../shared/data; tests that need them skip without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Sentinel data not found at {SHARED_DATA}")
    return SHARED_DATA


def run_cli(*args, timeout=600, env=None):
    """Run `sar-cloud-removal ARGS...` as a user would, in a fresh process."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "sar_cloud_removal.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def answer_ctrl_c() -> None:
    """A child's `preexec_fn`: take SIGINT's default action back. A shell starts background
    jobs (`make test &`, a CI step run in the background) with SIGINT ignored, every child
    inherits that, and Python then leaves it ignored: a Ctrl-C test would see no Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def real_triplet(shared_data):
    """The georeferenced SEN12MS-CR triplet (256×256), scaled to the network's [0, 1] inputs."""
    from sar_cloud_removal.training.sen12mscr import find_triplets, read_triplet

    return read_triplet(find_triplets(shared_data / "sen12mscr")[0])


@pytest.fixture(scope="session")
def plugin_zip(tmp_path_factory) -> Path:
    """The plugin zip exactly as `make package` builds it from this tree (built once)."""
    from sar_cloud_removal.scripts.package import build_package
    out = tmp_path_factory.mktemp("dist") / "sar_cloud_removal.zip"
    build_package(out)
    return out
