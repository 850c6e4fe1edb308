"""Crash leftovers: the temporary files of a run killed with SIGKILL are removed by the next run
into the same folder, those of live runs are not, and two runs committing to the same paths
never leave a restored image from one beside a gate from the other."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import georasters
import tiny_models
from georasters import files_in
from sar_cloud_removal.core import geotiff, partials
from sar_cloud_removal.core.geotiff import OutputPair


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _partial_of(pid: int, stem="o", host=None) -> str:
    return f".{stem}.{host or partials.host_id()}-{pid}-0123abcd.partial.tif"


def _pair(folder, value: float, name="o"):
    pair = OutputPair(folder / f"{name}.tif", folder / f"{name}_gate.tif", crs="EPSG:32631",
                      transform=from_origin(600000, 5000000, 10, 10), width=16, height=16,
                      dtype="uint16", bands=13)
    pair.__enter__()
    pair.write(Window(0, 0, 16, 16), np.full((13, 16, 16), value, np.uint16),
               np.full((1, 16, 16), value / 1000, np.float32))
    return pair


def _run_of(folder, name="o"):
    """The run a committed pair came from: its restored value and its gate value x 1000."""
    with rasterio.open(folder / f"{name}.tif") as out, \
            rasterio.open(folder / f"{name}_gate.tif") as gate:
        return int(out.read(1)[0, 0]), int(round(float(gate.read(1)[0, 0]) * 1000))


def test_a_sigkilled_run_leaves_partials_that_the_next_run_removes(tmp_path, cli):
    s2, s1 = georasters.pair(tmp_path, rows=1024, cols=1024)
    model = tiny_models.identity_onnx(tmp_path / "id.onnx", tile_size=32, overlap=8)
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-m", "sar_cloud_removal.cli", "remove", "--s2", s2, "--s1", s1,
            "--out", out / "o.tif", "--model", model, "--batch-size", "1", "--threads", "1",
            "--quiet"]
    run = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # both partial images (restored and gate) are created one after the other: wait for both,
    # or the kill can land between them
    while sum(name.endswith(".partial.tif") for name in files_in(out)) < 2:
        assert run.poll() is None, "the run ended before writing anything"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    left = {name for name in files_in(out) if name.endswith(".partial.tif")}
    assert len(left) == 2 and all(f"-{run.pid}-" in name for name in left)

    # A live run's temporary file (this test's own process writes one) must survive.
    live = out / _partial_of(os.getpid(), "other")
    live.write_bytes(b"being written")
    done = cli("remove", "--s2", s2, "--s1", s1, "--out", out / "o.tif", "--model", model,
               "--tile", "256", "--overlap", "32", "--quiet")
    assert done.returncode == 0, done.stderr
    # (the killed run's scratch files beside its two partial images go too)
    assert re.search(r"Removed \d+ temporary file\(s\) that killed runs had left",
                     done.stdout + done.stderr)
    assert files_in(out) == {"o.tif", "o_gate.tif", live.name}


def test_only_dead_runs_of_this_machine_lose_their_partials(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    names = {
        "dead": _partial_of(dead),
        "dead_aux": _partial_of(dead) + ".aux.xml",
        "alive": _partial_of(alive, "b"),
        "other_host": _partial_of(dead, "c", host="ffffff" if partials.host_id() != "ffffff"
                                  else "eeeeee"),
        "old_anonymous": ".d.0123456789ab.partial.tif",
        "new_anonymous": ".e.0123456789ab.partial.tif",
        "user_file": "dead.partial.tif",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - partials.ANONYMOUS_MAX_AGE_S - 60
    os.utime(tmp_path / names["old_anonymous"], (old, old))
    removed = partials.remove_stale_partials(tmp_path)
    assert sorted(removed) == sorted([names["dead"], names["dead_aux"], names["old_anonymous"]])
    assert files_in(tmp_path) == {names[k] for k in ("alive", "other_host", "new_anonymous",
                                                     "user_file")}


def test_outputs_name_their_writer(tmp_path):
    pair = _pair(tmp_path, 100)
    temps = {name for name in files_in(tmp_path) if name.endswith(".partial.tif")}
    assert len(temps) == 2 and all(f"-{os.getpid()}-" in name for name in temps)
    pair.commit()
    pair.__exit__(None, None, None)
    assert files_in(tmp_path) == {"o.tif", "o_gate.tif"}


def test_a_second_commit_waits_for_the_first_so_pairs_never_mix(tmp_path, monkeypatch):
    """Run A is held between its two renames; run B's commit must wait for it, not slip its
    restored image in beside A's gate."""
    real_replace = os.replace
    hold_a, a_renamed_gate = threading.Event(), threading.Event()

    def replace(src, dst):
        real_replace(src, dst)
        if threading.current_thread().name == "A" and str(dst).endswith("_gate.tif"):
            a_renamed_gate.set()
            assert hold_a.wait(10)

    monkeypatch.setattr(geotiff.os, "replace", replace)
    pair_a, pair_b = _pair(tmp_path, 100), _pair(tmp_path, 200)
    thread_a = threading.Thread(target=pair_a.commit, name="A")
    thread_b = threading.Thread(target=pair_b.commit, name="B")
    thread_a.start()
    assert a_renamed_gate.wait(10)
    thread_b.start()
    time.sleep(0.5)
    assert thread_b.is_alive()                         # B waits on the lock
    assert not (tmp_path / "o.tif").exists()           # A's gate alone so far: not a mix
    hold_a.set()
    thread_a.join(10)
    thread_b.join(10)
    assert _run_of(tmp_path) == (200, 200)
    for pair in (pair_a, pair_b):
        pair.__exit__(None, None, None)
    assert files_in(tmp_path) == {"o.tif", "o_gate.tif"}


def test_a_run_killed_between_its_renames_leaves_no_mixed_pair(tmp_path):
    """An earlier pair exists; a run dies (os._exit, as SIGKILL) right after naming its gate.
    The folder then holds its gate alone, never its gate beside the earlier restored image,
    and its lock and leftovers do not block the next run."""
    first = _pair(tmp_path, 100)
    first.commit()
    first.__exit__(None, None, None)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from pathlib import Path
        from test_partials import _pair
        from sar_cloud_removal.core import geotiff
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if str(dst).endswith("_gate.tif"):
                os._exit(9)
        geotiff.os.replace = replace
        _pair(Path({str(tmp_path)!r}), 200).commit()
    """)
    child = subprocess.run([sys.executable, "-c", script])
    assert child.returncode == 9
    assert not (tmp_path / "o.tif").exists()
    with rasterio.open(tmp_path / "o_gate.tif") as gate:
        assert gate.read(1)[0, 0] == pytest.approx(0.2)
    third = _pair(tmp_path, 300)
    third.commit()
    third.__exit__(None, None, None)
    assert _run_of(tmp_path) == (300, 300)
    assert files_in(tmp_path) == {"o.tif", "o_gate.tif"}


def test_a_lock_left_by_a_dead_run_is_broken(tmp_path):
    (tmp_path / ".o.tif.lock").write_text(f"{partials.host_id()}-{_dead_pid()}-00000000")
    pair = _pair(tmp_path, 100)
    started = time.monotonic()
    pair.commit()
    pair.__exit__(None, None, None)
    assert time.monotonic() - started < 5
    assert files_in(tmp_path) == {"o.tif", "o_gate.tif"}


@pytest.mark.parametrize("interrupted_at", range(1, 7))   # 2 images + 2 x 2 levels
def test_an_interrupt_while_the_pair_creates_its_files_leaves_none(tmp_path, monkeypatch,
                                                                  interrupted_at):
    """Ctrl-C can land between any two of the files a pair creates (two images, then each
    one's overview levels); every file created so far is removed."""
    real_create, calls = geotiff._create, []

    def create_then_interrupt(path, target, profile):
        dataset = real_create(path, target, profile)
        calls.append(path)
        if len(calls) == interrupted_at:
            dataset.close()
            raise KeyboardInterrupt
        return dataset

    monkeypatch.setattr(geotiff, "_create", create_then_interrupt)
    pair = OutputPair(tmp_path / "o.tif", tmp_path / "o_gate.tif", crs="EPSG:32631",
                      transform=from_origin(600000, 5000000, 10, 10), width=600, height=600,
                      dtype="uint16", bands=13)
    with pytest.raises(KeyboardInterrupt):
        pair.__enter__()
    assert len(calls) == interrupted_at and files_in(tmp_path) == set()
