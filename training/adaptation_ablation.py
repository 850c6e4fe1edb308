"""`python -m sar_cloud_removal.training.adaptation_ablation`: global model vs scene-adapted vs
the per-scene ridge baseline (adaptation/ridge.py), on real held-out cloudy scenes and on larger
real clear scenes under simulated clouds (where the truth is the same date everywhere).

Every arm runs through the faces' entry point and the engine (keep-clear on), so it scores what a
user gets; the ridge arm keeps clear pixels with the global run's own gate, the same way.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..adaptation.ridge import box_mean, ridge_restore
from ..adaptation.scene import MARGIN
from ..core.keep_clear import keep_clear, keep_weight
from ..core.model_spec import load_spec, resolve_model
from .evaluate import json_safe, restore_through_engine, score_prediction, simulated_scenes
from .packed import read_packed

REPORT_PACKED = ("3968", "4065", "4287", "4294", "4433", "4438")
SIMULATED_SOURCES = ("terramind", "sen1floods11")
SHOWN = ("psnr", "ssim", "sam", "thick_psnr", "thick_ssim", "thick_sam")


def ridge_arm(triplet, gate: np.ndarray, keep_none: float, keep_full: float) -> np.ndarray:
    """The ridge baseline's output with clear pixels kept by the global run's gate, at the
    model's keep-clear levels, as the engine keeps them."""
    not_clear = (~np.isfinite(gate) | (np.nan_to_num(gate) < keep_full)).astype(np.float32)
    clear = box_mean(not_clear, 2 * MARGIN + 1) == 0
    predicted = ridge_restore(triplet.cloudy, triplet.s1, clear)
    if predicted is None:
        return triplet.cloudy
    return keep_clear(np.clip(predicted, 0, 1), triplet.cloudy,
                      keep_weight(gate, keep_none, keep_full)[None])


def scenes(data_root: Path, seed: int) -> list:
    real = [("real", read_packed(data_root / "sen12mscr" / "packed", i)) for i in REPORT_PACKED]
    simulated = simulated_scenes(data_root, SIMULATED_SOURCES, seed)
    return real + [("simulated", t) for t in simulated]


def run_ablation(data_root: Path, model: str, seconds: float, threads: int, seed: int) -> list:
    rows = []
    spec = load_spec(resolve_model(model))
    with tempfile.TemporaryDirectory(prefix="sar-cr-ablation-") as work:
        for index, (kind, triplet) in enumerate(scenes(data_root, seed)):
            folder = Path(work) / str(index)
            common = dict(model=model, threads=threads, seed=seed)
            restored, gate, _ = restore_through_engine(triplet, folder / "global", **common)
            row = {"scene": triplet.name, "kind": kind,
                   "pixels": int(np.prod(triplet.target.shape[-2:])),
                   "global": score_prediction(triplet, restored, gate)["model"],
                   "input": score_prediction(triplet, triplet.cloudy, gate)["model"],
                   "ridge": score_prediction(triplet, ridge_arm(triplet, gate, spec.keep_none,
                                                             spec.keep_full), gate)["model"]}
            started = time.perf_counter()
            restored, gate, result = restore_through_engine(
                triplet, folder / "adapted", adapt=True, adapt_seconds=seconds, **common)
            row["adapted"] = score_prediction(triplet, restored, gate)["model"]
            row["adapt_seconds"] = time.perf_counter() - started
            row["adaptation"] = result.adaptation.message
            row["adapted_used"] = result.adaptation.adapted
            rows.append(row)
            print(f"{triplet.name}: global {row['global']['psnr']:.2f} dB, adapted "
                  f"{row['adapted']['psnr']:.2f} dB, ridge {row['ridge']['psnr']:.2f} dB; "
                  f"{result.adaptation.message}", flush=True)
    return rows


def markdown(rows) -> str:
    arms = ("input", "global", "adapted", "ridge")
    lines = ["| scenes | arm | " + " | ".join(SHOWN) + " |",
             "|---|---|" + "---|" * len(SHOWN)]
    for kind in ("real", "simulated"):
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        for arm in arms:
            values = [np.nanmean([r[arm].get(k, np.nan) for r in group]) for k in SHOWN]
            lines.append(f"| {kind} ({len(group)}) | {arm} | "
                         + " | ".join(f"{v:.2f}" if k.endswith(("psnr", "sam")) else f"{v:.3f}"
                                      for k, v in zip(SHOWN, values)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("--adapt-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, metavar="REPORT.json")
    args = parser.parse_args(argv)
    rows = run_ablation(args.data, args.model, args.adapt_seconds, args.threads, args.seed)
    print(markdown(rows))
    if args.out:
        args.out.write_text(json.dumps(json_safe(rows), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
