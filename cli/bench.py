"""`sar-cloud-removal bench`: throughput and peak memory of the engine on generated scenes.

Speed and memory are measured here, not asserted in tests (SPEC §7). Each (scene size, backend)
runs the engine end to end in a fresh child process, so the child's peak resident memory
(ru_maxrss) belongs to that run alone and shows whether memory stays flat as scenes grow. Right
after, the same child times the bare model on tiles of the engine's size; the ratio tells how
much the engine adds (reading, reprojecting S1, tile overlap, blending, writing) on top of the
network, measured under the same load (the CPU may be shared).
"""
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..core.backends import BACKENDS, DEVICES
from ..core.errors import UserError

BENCH_BACKENDS = tuple(name for name in BACKENDS if name != "auto")
SCENE_SEED = 11
_COMPLETE = "complete"          # marker file: the cached scene was written to the end
_MIN_MODEL_BATCHES = 3


def add_arguments(parser):
    parser.add_argument("--sizes", default="1,16,100", metavar="MP,MP,...",
                        help="scene sizes in megapixels (default: %(default)s)")
    parser.add_argument("--backends", default=",".join(BENCH_BACKENDS), metavar="NAME,...",
                        help="backends to measure (default: %(default)s)")
    parser.add_argument("--model", default="default", metavar="NAME|PATH",
                        help="model to run (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--tile", type=int, metavar="N", help="tile size (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="tiles per inference call (default: %(default)s)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores)")
    parser.add_argument("--model-seconds", type=float, default=3.0, metavar="S",
                        help="time the bare model for at least this long, after a warm-up "
                             "batch (default: %(default)s)")
    parser.add_argument("--workdir", default="bench_output", metavar="DIR",
                        help="scenes (cached), outputs and bench.md (default: %(default)s)")


def _parse_list(text: str, option: str) -> list:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"{option} is empty; give a comma-separated list.")
    return items


def parse_sizes(text: str) -> list:
    try:
        sizes = [float(item) for item in _parse_list(text, "--sizes")]
    except ValueError:
        raise UserError(f"--sizes '{text}' must be megapixel numbers such as 1,16,100.") from None
    if any(not 0.01 <= size <= 400 for size in sizes):
        raise UserError(f"--sizes '{text}' must lie between 0.01 and 400 megapixels.")
    return sizes


def parse_backends(text: str) -> list:
    backends = _parse_list(text, "--backends")
    unknown = [b for b in backends if b not in BENCH_BACKENDS]
    if unknown:
        raise UserError(f"Unknown backend '{unknown[0]}' in --backends; use "
                        f"{' and/or '.join(BENCH_BACKENDS)}.")
    return backends


def cached_scene(workdir: Path, megapixels: float):
    """The generated scene of about `megapixels` (square), written once and reused."""
    from ..synthetic.scene import scene_paths, write_scene

    side = max(64, round(math.sqrt(megapixels * 1e6)))
    folder = workdir / "scenes" / f"{side}px_seed{SCENE_SEED}"
    if not (folder / _COMPLETE).is_file():
        print(f"generating a {side} x {side} px scene in {folder} (cached for later runs) ...",
              flush=True)
        started = time.perf_counter()
        write_scene(folder, side, side, seed=SCENE_SEED, cloud_kind="mixed", coverage=0.5)
        (folder / _COMPLETE).write_text(f"{time.perf_counter() - started:.1f} s\n")
    return scene_paths(folder)


def _in_child(job: dict) -> dict:
    """Run one measurement in a fresh interpreter; its peak memory is then its own."""
    proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(job)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"The benchmark run on {Path(job['s2']).parent.name} with "
                        f"{job['backend']} failed: {lines[-1] if lines else 'no message'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _realistic_batch(s2_path, s1_path, batch: int, tile: int):
    """`batch` tiles read from a generated scene and normalised as the engine does."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from ..core.sensors import normalise_s1, normalise_s2

    with rasterio.open(s2_path) as s2, rasterio.open(s1_path) as s1:
        s2_tiles, s1_tiles = [], []
        for i in range(batch):
            col = (i * tile) % max(1, s2.width - tile + 1)
            s2_tiles.append(s2.read(window=Window(col, 0, tile, tile), boundless=True))
            # S1 is on another grid: a resampled patch has the right statistics, which is all
            # a throughput measurement needs.
            s1_tiles.append(s1.read(window=Window(col // 2, 0, tile // 2, tile // 2),
                                    out_shape=(2, tile, tile), boundless=True,
                                    resampling=Resampling.bilinear))
    return (normalise_s2(np.stack(s2_tiles), 0), normalise_s1(np.stack(s1_tiles), False))


def _model_throughput(job: dict, files, spec) -> float:
    """Megapixels per second of the bare backend on batches of the engine's tiles."""
    from ..core.backends import create_backend

    tile = job["tile"] or spec.tile_size
    s2, s1 = _realistic_batch(job["s2"], job["s1"], job["batch_size"], tile)
    with create_backend(files, spec, backend=job["backend"], device=job["device"],
                        threads=job["threads"]) as backend:
        backend.run(s2, s1)  # warm-up: graph optimisation, allocations, kernel selection
        batches, started = 0, time.perf_counter()
        while (batches < _MIN_MODEL_BATCHES
               or time.perf_counter() - started < job["model_seconds"]):
            backend.run(s2, s1)
            batches += 1
        seconds = time.perf_counter() - started
    return batches * job["batch_size"] * tile * tile / 1e6 / seconds


def _measure(job: dict) -> dict:
    """The child's work: the engine end to end, its peak memory, then the bare model."""
    from ..core.engine import RemovalRequest, remove_clouds
    from ..core.model_spec import load_spec, resolve_model

    result = remove_clouds(RemovalRequest(
        s2_path=job["s2"], s1_path=job["s1"], out_path=job["out"], gate_path=job["gate"],
        model=job["model"], backend=job["backend"], device=job["device"],
        tile_size=job["tile"], threads=job["threads"], batch_size=job["batch_size"]))
    peak_rss_mb = _peak_rss_mb()
    files = resolve_model(job["model"])
    spec = load_spec(files)
    return {"seconds": result.seconds, "megapixels": result.megapixels,
            "device": result.device, "peak_rss_mb": peak_rss_mb,
            "model_mp_per_s": _model_throughput(job, files, spec),
            "tile": job["tile"] or spec.tile_size,
            "model": f"{spec.name} {spec.version} ({spec.architecture})"}


def _machine() -> str:
    from ..core.backends import available_cores

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"
    return f"{cpu}, {available_cores()} cores available{memory}"


def _load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def format_table(rows: list) -> str:
    header = ("| size (MP) | backend | device | end-to-end (s) | end-to-end (MP/s) "
              "| model only (MP/s) | engine overhead (%) | peak RSS (MB) |\n"
              "|---:|---|---|---:|---:|---:|---:|---:|")
    lines = [header]
    for r in rows:
        lines.append(f"| {r['megapixels']:.2f} | {r['backend']} | {r['device']} "
                     f"| {r['seconds']:.1f} | {r['mp_per_s']:.3f} | {r['model_mp_per_s']:.3f} "
                     f"| {r['overhead_percent']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def run(args):
    sizes = parse_sizes(args.sizes)
    backends = parse_backends(args.backends)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}.")
    workdir = Path(args.workdir)
    try:
        (workdir / "outputs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"Cannot create the benchmark folder {workdir} ({exc.strerror}); "
                        f"choose another --workdir.") from None
    scenes = {size: cached_scene(workdir, size) for size in sizes}
    load_before = _load_average()
    common = {"model": args.model, "device": args.device, "tile": args.tile,
              "threads": args.threads, "batch_size": args.batch_size,
              "model_seconds": args.model_seconds}
    rows = []
    for size in sizes:
        for backend in backends:
            print(f"{size:g} MP, {backend} ...", flush=True)
            out = workdir / "outputs" / f"{size:g}MP_{backend}"
            measured = _in_child(dict(common, backend=backend, s2=str(scenes[size].s2_cloudy),
                                      s1=str(scenes[size].s1), out=f"{out}.tif",
                                      gate=f"{out}_gate.tif"))
            mp_per_s = measured["megapixels"] / measured["seconds"]
            rows.append(dict(measured, backend=backend, mp_per_s=mp_per_s,
                             overhead_percent=(measured["model_mp_per_s"] / mp_per_s - 1) * 100))
    table = format_table(rows)
    options = [("--sizes", args.sizes), ("--backends", args.backends), ("--model", args.model),
               ("--device", args.device), ("--tile", args.tile),
               ("--batch-size", args.batch_size), ("--threads", args.threads),
               ("--workdir", args.workdir)]
    command = "sar-cloud-removal bench " + " ".join(f"{flag} {value}" for flag, value in options
                                                    if value is not None)
    report = (f"# Benchmark\n\n"
              f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
              f"- command: `{command}`\n"
              f"- model: {rows[0]['model']}, tile {rows[0]['tile']} px, "
              f"batch {args.batch_size}\n"
              f"- machine: {_machine()}\n"
              f"- load average (1 min) before / after the runs: {load_before} / "
              f"{_load_average()} (anything above the benchmark's own load is other work "
              f"sharing the CPU)\n\n{table}\n")
    (workdir / "bench.md").write_text(report)
    print("\n" + table + f"\n\nwritten to {workdir / 'bench.md'}")
    return 0


def _child_main(argv) -> int:
    """Child entry point: run one measurement and print it as the last line of stdout."""
    job = json.loads(argv[0])
    try:
        result = _measure(job)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
