"""`python -m sar_cloud_removal.training.adapt_every_pair`: `sar-cloud-removal remove --adapt` on
every real S1/S2 pair in the shared data, as a user runs it (one CLI process per pair), with a
table of what each run did: adapted (and the held-out change), skipped (and why), or refused
(and the sentence it said).

The pairs: the SEN12MS-CR triplet, the Mamba-SCR partial triplet, the three dsen2cr_dsp pairs,
Sen1Floods11, the five TerraMind tiles, and the 15 packed triplets (written out as GeoTIFFs on a
stand-in grid, as `evaluate` does). The BigEarthNet groups are L2A in one file per band and
polarisation, which the product refuses by design (the network is trained on L1C); one pair of
each group is run to show the refusal is one clear sentence.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .evaluate import json_safe, write_triplet_inputs
from .packed import find_packed, read_packed


def file_pairs(root: Path) -> list:
    """(name, s2, s1) of every pair the CLI reads from files as they are shipped."""
    pairs = [("sen12mscr/ROIs2017_winter_112_p797",
              root / "sen12mscr/s2_cloudy/ROIs2017_winter_112_p797.tif",
              root / "sen12mscr/s1/ROIs2017_winter_112_p797.tif"),
             ("mamba_scr/ROIs1868_summer_19_p30",
              root / "sen12mscr_partial/mamba_scr/ROIs1868_summer_s2_cloudy_19_p30.tif",
              root / "sen12mscr_partial/mamba_scr/ROIs1868_summer_s1_19_p30.tif"),
             ("sen1floods11/Spain_7370579",
              root / "sen1floods11_sample/S2/Spain_7370579_S2Hand.tif",
              root / "sen1floods11_sample/S1/Spain_7370579_S1Hand.tif")]
    for s2 in sorted((root / "sen12mscr_partial/dsen2cr_dsp/s2").glob("*.tif")):
        pairs.append((f"dsen2cr_dsp/{s2.stem}", s2, s2.parents[1] / "s1" / s2.name))
    for s2 in sorted((root / "terramind_examples/S2L1C").glob("*.tif")):
        pairs.append((f"terramind/{s2.stem}", s2, s2.parents[1] / "S1RTC" / s2.name))
    benv1 = sorted(p for p in (root / "bigearthnet_configilm/benv1").iterdir() if p.is_dir())[0]
    pairs.append((f"bigearthnet_configilm/{benv1.name} (L2A)", benv1,
                  next(benv1.glob("*_S1_VV.tif"))))
    s2_example = sorted((root / "bigearthnet_example/BigEarthNet-S2-Example").iterdir())[0]
    s1_example = sorted((root / "bigearthnet_example/BigEarthNet-S1-Example").iterdir())[0]
    pairs.append((f"bigearthnet_example/{s2_example.name} (L2A)", s2_example,
                  next(s1_example.glob("*VV.tif"))))
    return pairs


def run_pair(name, s2, s1, out_dir: Path, seconds: float, threads: int) -> dict:
    started = time.perf_counter()
    command = [sys.executable, "-m", "sar_cloud_removal.cli", "remove", "--s2", str(s2),
               "--s1", str(s1), "--out", str(out_dir / "restored.tif"), "--adapt",
               "--adapt-seconds", str(seconds), "--threads", str(threads), "--seed", "0",
               "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    note = next((line[len("note: "):] for line in lines if line.startswith("note: ")
                 and "dapt" in line), "")
    error = next((line for line in lines if line.startswith(("error:", "internal error"))), "")
    if done.returncode == 0:
        outcome = "adapted" if "adapted to the scene in" in done.stdout else "not adapted"
    else:
        outcome = "refused" if error.startswith("error:") else "FAILED"
    return {"pair": name, "rc": done.returncode, "outcome": outcome,
            "seconds": time.perf_counter() - started, "said": note or error or lines[-1:],
            "traceback": "Traceback" in done.stderr}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--adapt-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sar-cr-every-pair-") as work:
        work = Path(work)
        jobs = list(file_pairs(args.data))
        packed = args.data / "sen12mscr/packed"
        for packed_id in find_packed(packed):
            folder = work / f"packed-{packed_id}"
            folder.mkdir()
            s2, s1 = write_triplet_inputs(read_packed(packed, packed_id), folder)
            jobs.append((f"packed/{packed_id}", s2, s1))
        for index, (name, s2, s1) in enumerate(jobs):
            out_dir = work / f"out-{index}"
            out_dir.mkdir()
            row = run_pair(name, s2, s1, out_dir, args.adapt_seconds, args.threads)
            rows.append(row)
            print(f"{row['pair']:<58} {row['outcome']:<12} {row['seconds']:5.1f} s  "
                  f"{row['said']}", flush=True)
    failed = [row["pair"] for row in rows if row["outcome"] == "FAILED" or row["traceback"]]
    print(f"{len(rows)} pairs: " + ", ".join(
        f"{sum(r['outcome'] == kind for r in rows)} {kind}"
        for kind in ("adapted", "not adapted", "refused", "FAILED")))
    if args.out:
        args.out.write_text(json.dumps(json_safe(rows), indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
