"""`python -m sar_cloud_removal.cli.demo --out demo_output`: the whole product on a generated scene.

It ships no data, so it makes its own cloudy S2 / S1 pair (different grids, as real products
come), runs the real `sar-cloud-removal remove` command on it, and writes a quicklook PNG that
shows input, result and gate side by side.
"""
import argparse
import sys
import time
from pathlib import Path

from ..core.backends import BACKENDS
from ..synthetic.scene import write_scene
from . import main as cli_main
from .quicklook import write_quicklook


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sar_cloud_removal.cli.demo",
        description="Generate a cloudy S2 / S1 scene, remove its clouds with the "
                    "sar-cloud-removal command and write a quicklook PNG.")
    parser.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1024,
                        help="side of the generated S2 scene in 10 m pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="scene seed (default: %(default)s)")
    parser.add_argument("--model", default="default", help="model name or file (default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--adapt-seconds", type=float, default=90.0,
                        help="budget of the scene-adapted run; 0 skips it (default: %(default)s)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.size < 64:
        print("error: --size must be at least 64 pixels.", file=sys.stderr)
        return 2
    out = Path(args.out)
    started = time.perf_counter()
    print(f"Generating a {args.size} x {args.size} px scene (S2 on UTM 10 m, S1 on EPSG:4326 "
          f"20 m) in {out / 'scene'} ...")
    scene = write_scene(out / "scene", args.size, args.size, seed=args.seed,
                        cloud_kind="mixed", coverage=0.45)
    runs = [("global", out / "restored_global.tif", out / "gate_global.tif",
             out / "quicklook_global.png", [])]
    if args.adapt_seconds > 0:
        runs.append(("adapted", out / "restored.tif", out / "gate.tif", out / "quicklook.png",
                     ["--adapt", "--adapt-seconds", str(args.adapt_seconds)]))
    for _, restored, gate, quicklook, extra in runs:
        command = ["remove", "--s1", str(scene.s1), "--s2", str(scene.s2_cloudy),
                   "--out", str(restored), "--gate", str(gate), "--model", args.model,
                   "--backend", args.backend, *extra]
        print("Running: sar-cloud-removal " + " ".join(command))
        status = cli_main(command)
        if status != 0:
            return status
        write_quicklook(quicklook, scene.s2_cloudy, restored, gate)
    print(f"\nDone in {time.perf_counter() - started:.0f} s.\n"
          f"  cloudy input S2   {scene.s2_cloudy}\n"
          f"  clear truth S2    {scene.s2_clear}\n"
          f"  input S1          {scene.s1}")
    for name, restored, gate, quicklook, _ in runs:
        print(f"  {name} model:\n    restored S2     {restored}\n    gate confidence {gate}\n"
              f"    quicklook       {quicklook}  (cloudy | restored | gate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
