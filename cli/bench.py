"""`sar-cloud-removal bench`: throughput and peak memory of the engine on generated scenes.

Speed and memory are measured here, not asserted in tests (SPEC §7). Each (scene size, backend)
runs the engine end to end in a fresh child process, so the child's peak resident memory
(VmHWM) belongs to that run alone and shows whether memory stays flat as scenes grow. Right
after, the same child times the bare model on tiles of the size and batch the engine used; the
ratio tells how much the engine adds (reading, reprojecting S1, tile overlap, blending, writing
the COGs and their overviews) on top of the network, measured under the same load (the CPU may
be shared). Before the runs the machine's float32 matrix-multiply peak is measured and set
against the network's FLOP per pixel, so the table shows how far the network itself is from
what the hardware can do.
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
FULL_TILE_SIDE = 10980          # one Sentinel-2 tile (100 km at 10 m): `--sizes full`
FULL_TILE_MP = FULL_TILE_SIDE ** 2 / 1e6
_COMPLETE = "complete"          # marker file: the cached scene was written to the end
_MIN_MODEL_BATCHES = 3


def add_arguments(parser):
    parser.add_argument("--sizes", default="4,40,full", metavar="MP,MP,...",
                        help="scene sizes in megapixels; 'full' is one Sentinel-2 tile, "
                             "10980 x 10980 px (default: %(default)s)")
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
        sizes = [FULL_TILE_MP if item.lower() == "full" else float(item)
                 for item in _parse_list(text, "--sizes")]
    except ValueError:
        raise UserError(f"--sizes '{text}' must be megapixel numbers such as 4,40 or 'full'.") \
            from None
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


def measure_engine(scene, out_prefix: Path, model: str = "default", backend: str = "auto",
                   device: str = "auto", tile=None, threads=None, batch_size: int = 4,
                   model_seconds: float = 3.0) -> dict:
    """The bench's measurement of one model on one generated scene (`cached_scene`): the engine
    end to end (seconds, megapixels, peak memory) and the bare model's MP/s of tile pixels, in a
    fresh interpreter so that the peak memory is its own. The outputs go to `out_prefix`.tif
    and `out_prefix`_gate.tif."""
    return _in_child({"model": model, "backend": backend, "device": device, "tile": tile,
                      "threads": threads, "batch_size": batch_size,
                      "model_seconds": model_seconds, "s2": str(scene.s2_cloudy),
                      "s1": str(scene.s1), "out": f"{out_prefix}.tif",
                      "gate": f"{out_prefix}_gate.tif"})


def _peak_rss_mb() -> float:
    """This process's peak resident memory since its exec: /proc's VmHWM, which belongs to the
    process's own address space. ru_maxrss is not enough: Linux carries it across fork and exec,
    so a child of a parent that grew (generating a full-tile scene takes 1.8 GB) reported the
    parent's peak for every size. ru_maxrss is the fallback where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0   # kB
    except (OSError, ValueError, IndexError):
        pass
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


def _model_throughput(job: dict, files, spec, tile: int, batch: int) -> float:
    """Megapixels per second of the bare backend on batches of the engine's tiles."""
    from ..core.backends import create_backend

    s2, s1 = _realistic_batch(job["s2"], job["s1"], batch, tile)
    with create_backend(files, spec, backend=job["backend"], device=job["device"],
                        threads=job["threads"]) as backend:
        backend.run(s2, s1)  # warm-up: graph optimisation, allocations, kernel selection
        batches, started = 0, time.perf_counter()
        while (batches < _MIN_MODEL_BATCHES
               or time.perf_counter() - started < job["model_seconds"]):
            backend.run(s2, s1)
            batches += 1
        seconds = time.perf_counter() - started
    return batches * batch * tile * tile / 1e6 / seconds


def _timed_commits():
    """Time OutputPair.commit (the COG copies with their overviews) in this child process."""
    from ..core import geotiff

    seconds = []
    commit = geotiff.OutputPair.commit

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return commit(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    geotiff.OutputPair.commit = timed
    return seconds


def _measure(job: dict) -> dict:
    """The child's work: the engine end to end, its peak memory, then the bare model."""
    from ..core import engine
    from ..core.engine import RemovalRequest, remove_clouds
    from ..core.model_spec import load_spec, resolve_model
    from ..core.tiling import TileGrid

    commits = _timed_commits()
    result = remove_clouds(RemovalRequest(
        s2_path=job["s2"], s1_path=job["s1"], out_path=job["out"], gate_path=job["gate"],
        model=job["model"], backend=job["backend"], device=job["device"],
        tile_size=job["tile"], threads=job["threads"], batch_size=job["batch_size"]))
    peak_rss_mb = _peak_rss_mb()
    files = resolve_model(job["model"])
    spec = load_spec(files)
    tile = result.tile_size
    batch = job["batch_size"]
    if result.device == "cpu":   # as the engine batches on the CPU
        batch = max(1, min(batch, engine.CPU_BATCH_PIXELS // (tile * tile)))
    grid = TileGrid(result.height, result.width, tile, spec.overlap, spec.overlap // 2)
    tile_pixels = len(grid.rows) * len(grid.cols) * tile * tile
    return {"seconds": result.seconds, "megapixels": result.megapixels,
            "device": result.device, "peak_rss_mb": peak_rss_mb,
            "model_mp_per_s": _model_throughput(job, files, spec, tile, batch),
            "tile": tile, "batch": batch, "commit_seconds": sum(commits),
            "tile_pixels_per_pixel": tile_pixels / (result.width * result.height),
            "model": f"{spec.name} {spec.version} ({spec.architecture})"}


def gemm_peak_gflops(seconds: float = 1.0) -> float:
    """The machine's float32 matrix-multiply rate (torch, else numpy), all cores, best of a
    few 2048 x 2048 products: the physical limit a convolutional network's CPU speed is set
    against."""
    try:
        import torch

        torch.set_num_threads(_cores())
        a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
        multiply = lambda: torch.mm(a, b)   # noqa: E731
    except ImportError:
        import numpy as np

        a, b = np.random.rand(2048, 2048).astype("f4"), np.random.rand(2048, 2048).astype("f4")
        multiply = lambda: a @ b   # noqa: E731
    multiply()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - started)
    return 2 * 2048 ** 3 / best / 1e9


def network_flop_per_pixel(model: str):
    """FLOP (2 x multiply-accumulates of convolutions and linear layers) per pixel of the
    model's network, or None without torch."""
    try:
        from ..core.model_spec import load_spec, resolve_model
        from ..models.complexity import count_macs
        from ..models.registry import build
    except ImportError:
        return None
    spec = load_spec(resolve_model(model))
    network = build(spec.architecture, **spec.config)
    return 2 * count_macs(network, 256) / 256 ** 2


def _cores() -> int:
    from ..core.backends import available_cores

    return available_cores()


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
              "| model only (MP/s) | engine overhead (%) | peak RSS (MB) "
              "| end-to-end ÷ model | tile (px) | tile px per output px "
              "| COG + overviews (s) |\n"
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [header]
    for r in rows:
        lines.append(f"| {r['megapixels']:.2f} | {r['backend']} | {r['device']} "
                     f"| {r['seconds']:.1f} | {r['mp_per_s']:.3f} | {r['model_mp_per_s']:.3f} "
                     f"| {r['overhead_percent']:.0f} | {r['peak_rss_mb']:.0f} "
                     f"| {r['mp_per_s'] / r['model_mp_per_s']:.2f} | {r['tile']} "
                     f"| {r['tile_pixels_per_pixel']:.2f} | {r['commit_seconds']:.1f} |")
    return "\n".join(lines)


def limits_line(peak_gflops: float, flop_per_pixel, rows: list) -> str:
    """The machine's GEMM peak, the network's FLOP per pixel and how near the model runs."""
    line = f"- float32 GEMM peak of this machine: {peak_gflops:.0f} GFLOP/s (all cores)"
    if not flop_per_pixel:
        return line + "; network FLOP per pixel: n/a (needs torch)"
    line += (f"; network: {flop_per_pixel / 1e3:.0f} kFLOP per pixel, so at most "
             f"{peak_gflops * 1e3 / flop_per_pixel:.2f} MP/s of tile pixels at that peak")
    for r in rows:
        achieved = r["model_mp_per_s"] * flop_per_pixel / 1e3
        line += (f"; model only, {r['megapixels']:.0f} MP {r['backend']}: {achieved:.0f} "
                 f"GFLOP/s ({achieved / peak_gflops * 100:.0f} % of the peak)")
        break
    return line


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
    peak_gflops = gemm_peak_gflops()
    flop_per_pixel = network_flop_per_pixel(args.model)
    common = {"model": args.model, "device": args.device, "tile": args.tile,
              "threads": args.threads, "batch_size": args.batch_size,
              "model_seconds": args.model_seconds}
    rows = []
    for size in sizes:
        for backend in backends:
            print(f"{size:g} MP, {backend} ...", flush=True)
            out = workdir / "outputs" / f"{size:g}MP_{backend}"
            measured = measure_engine(scenes[size], out, **dict(common, backend=backend))
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
    notes = [limits_line(peak_gflops, flop_per_pixel, rows), memory_line(rows)]
    if FULL_TILE_MP in sizes:
        notes.append(f"- {FULL_TILE_MP:.2f} MP is one full Sentinel-2 tile "
                     f"({FULL_TILE_SIDE} x {FULL_TILE_SIDE} px)")
    notes = "\n".join(note for note in notes if note)
    report = (f"# Benchmark\n\n"
              f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
              f"- command: `{command}`\n"
              f"- model: {rows[0]['model']}, tiles fitted to each scene from "
              f"{args.tile or 'the default'} px, batch {args.batch_size} "
              f"(on the CPU at most {rows[0]['batch']} tile(s) per call)\n"
              f"- machine: {_machine()}\n"
              f"- load average (1 min) before / after the runs: {load_before} / "
              f"{_load_average()} (anything above the benchmark's own load is other work "
              f"sharing the CPU)\n\n{table}\n\n{notes}\n")
    (workdir / "bench.md").write_text(report)
    print("\n" + table + "\n\n" + notes + f"\n\nwritten to {workdir / 'bench.md'}")
    return 0


def memory_line(rows: list) -> str:
    """How peak memory changes from the smallest to the largest scene, per backend."""
    parts = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = sorted((r for r in rows if r["backend"] == backend),
                      key=lambda r: r["megapixels"])
        if len(mine) > 1:
            low, high = mine[0], mine[-1]
            change = (high["peak_rss_mb"] / low["peak_rss_mb"] - 1) * 100
            parts.append(f"{backend} {low['peak_rss_mb']:.0f} MB at {low['megapixels']:.0f} MP "
                         f"-> {high['peak_rss_mb']:.0f} MB at {high['megapixels']:.0f} MP "
                         f"({change:+.0f} %)")
    return "- peak RSS as the scene grows: " + "; ".join(parts) if parts else ""


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
