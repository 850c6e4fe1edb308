"""`sar-cloud-removal batch` on Dask: real S1/S2 pairs from ../shared/data, a deliberately bad
pair, resume, a CSV sent to an existing scheduler, and Ctrl-C.

Every good scene must be byte for byte what a single `remove` run writes for it: one engine
entry point serves both faces.
"""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import answer_ctrl_c, run_cli
from sar_cloud_removal.cli import main as cli_main
from sar_cloud_removal.cli.batch import pair_folder, read_scene_csv
from sar_cloud_removal.core.errors import UserError

# (folder in the scene folder, S1 name, S2 name) -> data paths under ../shared/data
PAIRS = {
    "winter": ("sen12mscr/s1/ROIs2017_winter_112_p797.tif",
               "sen12mscr/s2_cloudy/ROIs2017_winter_112_p797.tif"),
    "summer": ("sen12mscr_partial/mamba_scr/ROIs1868_summer_s1_19_p30.tif",
               "sen12mscr_partial/mamba_scr/ROIs1868_summer_s2_cloudy_19_p30.tif"),
    "spring30": ("sen12mscr_partial/dsen2cr_dsp/s1/ROIs1158_spring_101_30.tif",
                 "sen12mscr_partial/dsen2cr_dsp/s2/ROIs1158_spring_101_30.tif"),
}
# Korea's S1 against the Netherlands' S2: paired by name, refused by the engine.
BAD = ("sen12mscr_partial/dsen2cr_dsp/s1/ROIs1158_spring_101_32.tif",
       "sen12mscr/s2_cloudy/ROIs2017_winter_112_p797.tif")


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


@pytest.fixture(scope="module")
def scene_folder(shared_data, tmp_path_factory):
    """A folder laid out as users keep scenes: the data's own names, in s1/, s2/ subfolders."""
    root = tmp_path_factory.mktemp("scenes")
    _link(shared_data / PAIRS["winter"][0], root / "sen12mscr" / "s1" / "ROIs2017_winter_112_p797.tif")
    _link(shared_data / PAIRS["winter"][1], root / "sen12mscr" / "s2_cloudy" / "ROIs2017_winter_112_p797.tif")
    for data in PAIRS["summer"]:
        _link(shared_data / data, root / "mamba" / Path(data).name)
    _link(shared_data / PAIRS["spring30"][0], root / "dsp" / "s1" / "ROIs1158_spring_101_30.tif")
    _link(shared_data / PAIRS["spring30"][1], root / "dsp" / "s2" / "ROIs1158_spring_101_30.tif")
    _link(shared_data / BAD[0], root / "bad" / "bad_s1.tif")
    _link(shared_data / BAD[1], root / "bad" / "bad_s2.tif")
    return root


def _summary(path: Path) -> dict:
    with open(path, newline="") as handle:
        return {row["scene"]: row for row in csv.DictReader(handle)}


def _single_run(shared_data, pair, out: Path, *extra):
    s1, s2 = (shared_data / p for p in pair)
    assert cli_main(["remove", "--s1", str(s1), "--s2", str(s2), "--out", str(out),
                     "--quiet", *extra]) == 0
    return out, out.with_name(out.stem + "_gate.tif")


def _partials(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*.partial.tif"))


@pytest.fixture(scope="module")
def folder_batch(scene_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "restored"
    proc = run_cli("batch", scene_folder, "--out-dir", out, "--workers", "2", timeout=300)
    return out, proc


def test_folder_batch_restores_the_good_pairs_and_reports_the_bad_one(folder_batch):
    out, proc = folder_batch
    assert proc.returncode == 1, proc.stderr      # not all scenes succeeded
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "local cluster: 2 worker(s)" in proc.stdout
    assert "Dask dashboard: http://" in proc.stdout
    rows = _summary(out / "batch_summary.csv")
    assert set(rows) == {"ROIs2017_winter_112_p797", "ROIs1868_summer_s2_cloudy_19_p30",
                         "ROIs1158_spring_101_30", "bad_s2"}
    bad = rows.pop("bad_s2")
    assert bad["status"] == "failed"
    assert "do not overlap" in bad["message"] and bad["message"].count(". ") == 0
    assert bad["message"] in proc.stdout          # the printed table carries the reason too
    for name, row in rows.items():
        assert row["status"] == "ok", row
        assert float(row["megapixels"]) == pytest.approx(256 * 256 / 1e6, abs=1e-3)
        assert float(row["seconds"]) > 0 and row["device"] == "cpu"
    assert not (out / "bad_s2_restored.tif").exists() and not (out / "bad_s2_gate.tif").exists()
    assert _partials(out) == []


def test_each_batch_scene_is_byte_identical_to_a_single_remove_run(folder_batch, shared_data,
                                                                    tmp_path):
    out, _ = folder_batch
    names = {"winter": "ROIs2017_winter_112_p797", "summer": "ROIs1868_summer_s2_cloudy_19_p30",
             "spring30": "ROIs1158_spring_101_30"}
    for key, name in names.items():
        single, single_gate = _single_run(shared_data, PAIRS[key], tmp_path / f"{key}.tif")
        assert (out / f"{name}_restored.tif").read_bytes() == single.read_bytes(), name
        assert (out / f"{name}_gate.tif").read_bytes() == single_gate.read_bytes(), name


def test_resume_skips_the_complete_scenes_and_retries_the_rest(folder_batch, scene_folder):
    out, _ = folder_batch
    done = {p: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    assert len(done) == 6
    proc = run_cli("batch", scene_folder, "--out-dir", out, "--workers", "2", "--resume",
                   "--quiet", timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "1 to restore, 3 already complete" in proc.stdout
    rows = _summary(out / "batch_summary.csv")
    assert rows.pop("bad_s2")["status"] == "failed"
    assert {row["status"] for row in rows.values()} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.tif")} == done   # nothing rewritten


def test_folder_pairing_by_name_and_by_overlap(scene_folder, tmp_path):
    (tmp_path / "out").mkdir()
    by_name, _ = pair_folder(scene_folder, tmp_path / "out", "name")
    pairs = {scene.name: Path(scene.s1).name for scene in by_name}
    assert pairs == {"ROIs2017_winter_112_p797": "ROIs2017_winter_112_p797.tif",
                     "ROIs1868_summer_s2_cloudy_19_p30": "ROIs1868_summer_s1_19_p30.tif",
                     "ROIs1158_spring_101_30": "ROIs1158_spring_101_30.tif",
                     "bad_s2": "bad_s1.tif"}
    assert all(Path(s.s1).parent.name != "s2_cloudy" for s in by_name)
    by_overlap, notes = pair_folder(scene_folder, tmp_path / "out", "overlap")
    pairs = {scene.name: Path(scene.s1).name for scene in by_overlap}
    # bad_s2 is the winter S2 image: by place it pairs with the winter S1, and bad_s1 is unused.
    assert pairs["bad_s2"] == "ROIs2017_winter_112_p797.tif"
    assert "100% covered" in next(s.note for s in by_overlap if s.name == "bad_s2")
    assert any("bad/bad_s1.tif" in note for note in notes)


def test_an_s2_without_s1_is_a_failed_scene_and_odd_rasters_are_noted(scene_folder, tmp_path,
                                                                       shared_data):
    folder = tmp_path / "scenes"
    _link(shared_data / PAIRS["winter"][1], folder / "lonely_s2.tif")
    _link(shared_data / "sen1floods11_sample/Labels/Spain_7370579_LabelHand.tif",
          folder / "label.tif")
    scenes, notes = pair_folder(folder, tmp_path / "out", "name")
    assert [s.name for s in scenes] == ["lonely_s2"]
    assert scenes[0].s1 is None and "No S1 image" in scenes[0].error
    assert "label.tif (1 bands)" in notes[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no Sentinel-2 image"):
        pair_folder(tmp_path / "empty", tmp_path / "elsewhere", "name")


def test_scene_csv_reading(tmp_path):
    listed = tmp_path / "scenes.csv"
    listed.write_text('# a comment\ns2,s1,out,aoi\nin/a_s2.tif, in/a_s1.tif, a.tif,'
                      '"1,2,3,4,EPSG:4326"\nin/b_s2.tif,in/b_s1.tif,sub/b.tif,\n')
    a, b = read_scene_csv(listed, tmp_path / "outs")
    assert a.s2 == str(tmp_path / "in" / "a_s2.tif") and a.out == str(tmp_path / "outs" / "a.tif")
    assert a.gate == str(tmp_path / "outs" / "a_gate.tif")
    assert (a.aoi, a.aoi_crs) == ((1.0, 2.0, 3.0, 4.0), "EPSG:4326")
    assert b.aoi is None and b.name == "b"
    listed.write_text("x_s2.tif,x_s1.tif,x.tif,x_mask.tif\n")            # no header
    (x,) = read_scene_csv(listed)
    assert x.gate == str(tmp_path / "x_mask.tif")
    for text, words in [("s2,s1,out,colour\n", "unknown column 'colour'"),
                        ("a.tif,b.tif\n", "no out path"),
                        ("a.tif,b.tif,c.tif\nd.tif,e.tif,c.tif\n", "write the same file"),
                        ("s2,s1,out,aoi\na.tif,b.tif,c.tif,1;2;3;4\n", "Row 2"),
                        ("# nothing\n", "has no scenes")]:
        listed.write_text(text)
        with pytest.raises(UserError, match=words):
            read_scene_csv(listed)


def test_csv_batch_on_an_existing_scheduler(shared_data, tmp_path):
    """--scheduler: the scenes go to a cluster the command did not start (here, in-process)."""
    from distributed import LocalCluster

    aoi = "704600,5629000,706000,5630400"   # inside the winter scene (EPSG:32631)
    s1, s2 = (shared_data / p for p in PAIRS["winter"])
    listed = tmp_path / "scenes.csv"
    listed.write_text(f's2,s1,out,gate,aoi\n{s2},{s1},winter.tif,winter_conf.tif,"{aoi}"\n'
                      f"{s2},{tmp_path / 'missing_s1.tif'},missing.tif,,\n")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=":0") as cluster:
        proc = run_cli("batch", listed, "--scheduler", cluster.scheduler_address, "--quiet",
                       timeout=300)
    assert proc.returncode == 1, proc.stderr
    rows = _summary(tmp_path / "batch_summary.csv")
    assert rows["winter"]["status"] == "ok"
    assert rows["missing"]["status"] == "failed" and "does not exist" in rows["missing"]["message"]
    single, single_gate = _single_run(shared_data, PAIRS["winter"], tmp_path / "single.tif",
                                      "--aoi", aoi)
    assert (tmp_path / "winter.tif").read_bytes() == single.read_bytes()
    assert (tmp_path / "winter_conf.tif").read_bytes() == single_gate.read_bytes()


def test_ctrl_c_cancels_cleanly(shared_data, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: finished scenes stay complete,
    the others leave no file (not even a temporary one), and the exit code is 130."""
    folder, out = tmp_path / "scenes", tmp_path / "out"
    for i in range(6):   # 512 x 512 px each, a few seconds a scene on one worker
        _link(shared_data / "sen1floods11_sample/S1/Spain_7370579_S1Hand.tif", folder / f"p{i}_s1.tif")
        _link(shared_data / "sen1floods11_sample/S2/Spain_7370579_S2Hand.tif", folder / f"p{i}_s2.tif")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sar_cloud_removal.cli", "batch", str(folder), "--out-dir",
         str(out), "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=dict(os.environ), preexec_fn=answer_ctrl_c)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[1/6]"):
                time.sleep(0.3)   # let the next scene get under way
                os.killpg(proc.pid, signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, "".join(lines) + rest + err
    assert "Traceback" not in err
    rows = _summary(out / "batch_summary.csv")
    statuses = [row["status"] for row in rows.values()]
    assert statuses.count("ok") >= 1 and "cancelled" in statuses
    for name, row in rows.items():
        written = {(out / f"{name}_restored.tif").exists(), (out / f"{name}_gate.tif").exists()}
        assert written == {row["status"] == "ok"}, name
    assert _partials(out) == []


def test_a_scheduler_address_that_cannot_work_is_one_sentence(tmp_path):
    listed = tmp_path / "scenes.csv"
    listed.write_text("s2,s1,out\na_s2.tif,a_s1.tif,a.tif\n")
    proc = run_cli("batch", listed, "--scheduler", "no-port-here")
    assert proc.returncode == 2
    assert "Cannot reach the Dask scheduler at no-port-here" in proc.stderr
    assert "Traceback" not in proc.stderr
