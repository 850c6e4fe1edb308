"""Shared test fixtures: where the real Sentinel data lives, and running the real CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture
def cli():
    return run_cli
