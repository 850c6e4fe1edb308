"""`sar-cloud-removal batch`: many scenes at once on Dask distributed.

Input is a CSV (`s2,s1,out[,gate][,aoi]`) or a folder whose S1 and S2 images are paired by a
rule (`--pair name`: tile and date, or the name without its modality words; `--pair overlap`:
the S1 that covers the S2 image, nearest in date). Each scene is one Dask task that calls
`core.engine.remove_clouds`, the entry point every face uses, so a batch scene is bit for bit
what `sar-cloud-removal remove` writes for it.

By default a `LocalCluster` sized to the machine runs the scenes (one worker per GPU when there
are GPUs); `--scheduler ADDRESS` sends them to an existing cluster (dask-jobqueue, Kubernetes,
a cloud cluster), whose workers need this package installed and must see the same paths.

A failed scene is reported with its one-sentence reason and does not stop the others; the exit
code is 0 only when every scene succeeded (or was already complete with `--resume`). Ctrl-C
cancels: running scenes stop at their next tile batch and their temporary files are removed,
as the engine removes them on every failure; scenes already finished stay complete.
"""
import csv
import math
import os
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.backends import BACKENDS, DEVICES
from ..core.errors import UserError
from .remove import add_adaptation_arguments, parse_aoi

SUMMARY_NAME = "batch_summary.csv"
SUMMARY_COLUMNS = ("scene", "status", "megapixels", "seconds", "device", "message",
                   "s2", "s1", "out", "gate")
CSV_COLUMNS = ("s2", "s1", "out", "gate", "aoi")
PAIR_RULES = ("name", "overlap")
RASTER_SUFFIXES = (".tif", ".tiff")
S2_PRODUCT_SUFFIXES = (".safe", ".zip")
CANCEL_POLL_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 120      # how long Ctrl-C waits for running scenes to stop and clean up
MEMORY_PER_WORKER_GB = 1.5     # engine arrays per block plus GDAL's cache, with room to spare
PRINT_ALL_ROWS = 100           # a longer summary prints only the scenes that did not succeed
# Words that name a modality rather than a place or a time: removed from file names before
# pairing by name, so ROIs1868_summer_s1_19_p30 and ROIs1868_summer_s2_cloudy_19_p30 pair.
MODALITY_WORDS = {"s1", "s2", "s1a", "s1b", "s1c", "s2a", "s2b", "s2c", "sar", "optical",
                  "s1hand", "s2hand", "s1rtc", "s2l1c", "l1c", "msil1c", "grd", "grdh",
                  "cloudy", "cloudfree", "clear", "vv", "vh", "vvvh"}
_TILE = re.compile(r"(?:^|[_\-.])T(\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2})(?=$|[_\-.])")
_DATE = re.compile(r"(?<!\d)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d{2})")
_DATE_TAGS = ("SENSING_TIME", "DATATAKE_SENSING_START", "PRODUCT_START_TIME", "ACQUISITION_DATE",
              "DATE_ACQUIRED", "ACQUISITION_START_TIME")


def add_arguments(parser):
    parser.add_argument("input", metavar="SCENES",
                        help="a CSV with columns s2,s1,out[,gate][,aoi] (paths relative to the "
                             "CSV's folder), or a folder of S1 and S2 images to pair")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="output folder: needed for a folder of images; for a CSV, relative "
                             "out and gate paths are taken from it (default: the CSV's folder)")
    parser.add_argument("--pair", default="name", choices=PAIR_RULES,
                        help="how to pair the S1 and S2 images of a folder: 'name' (same tile "
                             "and date in the names, or the same name once words such as s1, s2, "
                             "cloudy are removed) or 'overlap' (the S1 covering the S2 image, "
                             "nearest in date); default: %(default)s")
    parser.add_argument("--aoi", metavar="XMIN,YMIN,XMAX,YMAX[,EPSG:CODE]",
                        help="area of interest for every scene (a CSV's aoi column wins)")
    parser.add_argument("--summary", metavar="PATH",
                        help=f"summary CSV (default: {SUMMARY_NAME} in the output folder)")
    parser.add_argument("--resume", action="store_true",
                        help="skip scenes whose restored image and gate already exist complete")
    cluster = parser.add_argument_group("Dask cluster")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="address of a running Dask scheduler (e.g. tcp://head:8786); "
                              "default: start a local cluster sized to this machine")
    cluster.add_argument("--workers", type=int, metavar="N",
                         help="local cluster: worker processes (default: one per GPU, else "
                              "one per core as memory allows)")
    cluster.add_argument("--threads-per-worker", type=int, metavar="N",
                         help="local cluster: scenes each worker runs at once (default: 1)")
    cluster.add_argument("--dashboard-address", default=":8787", metavar="[HOST]:PORT",
                         help="local cluster: where the Dask dashboard listens (default: "
                              "%(default)s; another free port when it is taken)")
    engine = parser.add_argument_group("engine (as for remove)")
    engine.add_argument("--model", default="default", metavar="NAME|PATH",
                        help="a shipped model name or a .onnx/.pt file (default: %(default)s)")
    engine.add_argument("--backend", default="auto", choices=BACKENDS)
    engine.add_argument("--device", default="auto", choices=DEVICES)
    engine.add_argument("--tile", type=int, metavar="N", help="tile size (default: the model's)")
    engine.add_argument("--overlap", type=int, metavar="N",
                        help="tile overlap in pixels (default: the model's)")
    engine.add_argument("--s2-offset", default="auto", metavar="auto|N",
                        help="S2 DN offset: 1000 for processing baseline 04.00+; auto detects it")
    engine.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads per scene (default: the worker's share of the cores)")
    engine.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="tiles per inference call (default: %(default)s)")
    engine.add_argument("--raw-network", action="store_true",
                        help="write the network's output everywhere instead of keeping the "
                             "clear pixels of the input unchanged")
    add_adaptation_arguments(engine, per_scene=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or scene lines")


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass
class Scene:
    name: str
    s2: str
    s1: Optional[str]
    out: str
    gate: str
    aoi: Optional[tuple] = None
    aoi_crs: Optional[str] = None
    note: str = ""                 # how it was paired, shown in the summary's message
    error: str = ""                # set when the scene cannot run at all (e.g. no S1 pairs)


@dataclass
class Outcome:
    status: str                    # ok | failed | skipped | cancelled
    megapixels: Optional[float] = None
    seconds: Optional[float] = None
    device: str = ""
    message: str = ""
    messages: list = field(default_factory=list)


def _gate_for(out: Path) -> Path:
    from ..core.engine import default_gate_path
    return default_gate_path(out)


def read_scene_csv(path: Path, out_dir: Optional[Path] = None, default_aoi=None) -> list:
    """The scenes of a CSV: columns s2,s1,out[,gate][,aoi], with or without a header row.

    Relative input paths are taken from the CSV's folder, relative outputs from `out_dir`
    (default: the CSV's folder too). Lines starting with # are comments.
    """
    path = Path(path)
    base = path.resolve().parent
    out_base = Path(out_dir).resolve() if out_dir else base
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UserError(f"Cannot read the scene list {path} ({reason}); give a CSV file.") from None
    rows = [(number, row) for number, row in
            enumerate(csv.reader(text.splitlines(), skipinitialspace=True), start=1)
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        raise UserError(f"The scene list {path} has no scenes; write one row per scene: "
                        f"s2,s1,out[,gate][,aoi].")
    columns = list(CSV_COLUMNS)
    first = [cell.strip().lower() for cell in rows[0][1]]
    if {"s2", "s1", "out"} <= set(first):
        unknown = [name for name in first if name not in CSV_COLUMNS]
        if unknown:
            raise UserError(f"The scene list {path} has an unknown column '{unknown[0]}'; the "
                            f"columns are {', '.join(CSV_COLUMNS)}.")
        columns = first
        rows = rows[1:]
    scenes = []
    for number, row in rows:
        cells = [cell.strip() for cell in row]
        if len(cells) > len(columns):
            raise UserError(f"Row {number} of {path} has {len(cells)} values but there are "
                            f"{len(columns)} columns; quote an AOI that holds commas.")
        values = dict(zip(columns, cells))
        for needed in ("s2", "s1", "out"):
            if not values.get(needed):
                raise UserError(f"Row {number} of {path} has no {needed} path; every row needs "
                                f"s2, s1 and out.")
        aoi, aoi_crs = default_aoi or (None, None)
        if values.get("aoi"):
            try:
                aoi, aoi_crs = parse_aoi(values["aoi"])
            except UserError as exc:
                raise UserError(f"Row {number} of {path}: {exc}") from None
        out = out_base / values["out"]
        gate = out_base / values["gate"] if values.get("gate") else _gate_for(out)
        scenes.append(Scene(name=out.stem, s2=str(base / values["s2"]),
                            s1=str(base / values["s1"]), out=str(out), gate=str(gate),
                            aoi=aoi, aoi_crs=aoi_crs))
    _check_unique(scenes, path)
    return scenes


def _check_unique(scenes: list, source) -> None:
    seen = {}
    for scene in scenes:
        for role, target in (("out", scene.out), ("gate", scene.gate)):
            key = os.path.normcase(os.path.abspath(target))
            if key in seen:
                raise UserError(f"Two scenes of {source} write the same file {target} "
                                f"({seen[key]} and {scene.name}); give each scene its own "
                                f"output names.")
            seen[key] = scene.name
    names = {}
    for scene in scenes:   # scene names label the summary: make them unique too
        count = names.get(scene.name, 0)
        names[scene.name] = count + 1
        if count:
            scene.name = f"{scene.name}#{count + 1}"


@dataclass
class _Image:
    path: Path
    relative: str
    kind: str                      # "s1" or "s2"
    tile: Optional[str] = None
    date: Optional[tuple] = None   # (year, month, day)
    crs: object = None
    bounds: Optional[tuple] = None

    @property
    def stem(self) -> str:
        name = self.path.name
        for suffix in RASTER_SUFFIXES + S2_PRODUCT_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[:-len(suffix)]
        return self.path.stem

    def name_key(self):
        """Tile and date when the name carries both, otherwise the name without modality words."""
        if self.tile and self.date:
            return ("tile-date", self.tile, self.date)
        words = [w for w in re.split(r"[_\-.\s]+", self.stem.lower()) if w]
        return ("name", "_".join(w for w in words if w not in MODALITY_WORDS))


def _date_in(text: str):
    match = _DATE.search(text)
    return tuple(int(part) for part in match.groups()) if match else None


def _tile_in(text: str):
    match = _TILE.search(text)
    return match.group(1) if match else None


def _classify(path: Path, root: Path) -> tuple:
    """(an _Image, None) for an S1/S2 image, or (None, why it was ignored)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    relative = path.relative_to(root).as_posix()
    image = _Image(path, relative, "s2", tile=_tile_in(path.name), date=_date_in(path.name))
    if path.name.lower().endswith(S2_PRODUCT_SUFFIXES):
        if "msil1c" in path.name.lower():
            return image, None      # a Sentinel-2 L1C product; the engine reads it
        return None, f"{relative} (not a Sentinel-2 L1C product)"
    try:
        with rasterio.open(path) as dataset:
            if dataset.count == 2:
                image.kind = "s1"
            elif dataset.count != 13:
                return None, f"{relative} ({dataset.count} bands)"
            if dataset.crs is not None and not dataset.transform.is_identity:
                image.crs, image.bounds = dataset.crs, tuple(dataset.bounds)
            if image.date is None:
                tags = dataset.tags()
                image.date = next((_date_in(tags[tag].replace("-", ""))
                                   for tag in _DATE_TAGS if tag in tags), None)
    except RasterioIOError:
        return None, f"{relative} (not readable)"
    return image, None


def _scan(folder: Path, skip: Optional[Path]) -> tuple:
    images, ignored = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        if skip is not None and here.resolve() == skip:
            dirnames[:] = []
            continue
        products = [d for d in dirnames if d.lower().endswith(".safe")]
        dirnames[:] = sorted(d for d in dirnames if d not in products and not d.startswith("."))
        candidates = [here / d for d in products] + [
            here / f for f in filenames
            if f.lower().endswith(RASTER_SUFFIXES + (".zip",)) and not f.startswith(".")]
        for path in sorted(candidates):
            image, why = _classify(path, folder)
            if image is not None:
                images.append(image)
            else:
                ignored.append(why)
    return images, ignored


def _days_apart(a, b) -> Optional[int]:
    from datetime import date
    if a is None or b is None:
        return None
    try:
        return abs((date(*a) - date(*b)).days)
    except ValueError:
        return None


def _coverage(s2: _Image, s1: _Image) -> float:
    """Fraction of the S2 image's footprint that the S1 image covers (0 when unknown)."""
    from rasterio.warp import transform_bounds

    if s2.bounds is None or s1.bounds is None:
        return 0.0
    try:
        left, bottom, right, top = (s1.bounds if s1.crs == s2.crs else
                                    transform_bounds(s1.crs, s2.crs, *s1.bounds, densify_pts=21))
    except Exception:   # noqa: BLE001 (a CRS pair PROJ cannot relate: no coverage)
        return 0.0
    width = min(right, s2.bounds[2]) - max(left, s2.bounds[0])
    height = min(top, s2.bounds[3]) - max(bottom, s2.bounds[1])
    area = (s2.bounds[2] - s2.bounds[0]) * (s2.bounds[3] - s2.bounds[1])
    if width <= 0 or height <= 0 or area <= 0:
        return 0.0
    return min(1.0, width * height / area)


def _pair_by_overlap(s2: _Image, s1_images: list) -> tuple:
    """The S1 for an S2 image: full cover first, then nearest date, then most cover."""
    candidates = [(s1, _coverage(s2, s1)) for s1 in s1_images]
    candidates = [(s1, cover) for s1, cover in candidates if cover > 0]
    if not candidates:
        return None, ""

    def rank(item):
        s1, cover = item
        days = _days_apart(s2.date, s1.date)
        return (cover < 0.99, math.inf if days is None else days, -cover, s1.relative)

    s1, cover = min(candidates, key=rank)
    days = _days_apart(s2.date, s1.date)
    when = "date unknown" if days is None else f"{days} day{'s' if days != 1 else ''} apart"
    return s1, f"Paired by overlap with {s1.relative} ({cover:.0%} covered, {when})."


def pair_folder(folder, out_dir, rule: str = "name", default_aoi=None) -> tuple:
    """The scenes of a folder of S1 and S2 images, and notes on what was ignored or left alone.

    Images are told apart by their band count (2: S1, 13: S2); `.SAFE` folders and `.zip`
    products are S2. The output folder is not scanned. An S2 image without an S1 partner
    becomes a scene that fails with the reason.
    """
    folder, out_dir = Path(folder).resolve(), Path(out_dir).resolve()
    if rule not in PAIR_RULES:
        raise UserError(f"Unknown pairing rule '{rule}'; use one of {', '.join(PAIR_RULES)}.")
    images, ignored = _scan(folder, skip=out_dir)
    s2_images = [image for image in images if image.kind == "s2"]
    s1_images = [image for image in images if image.kind == "s1"]
    if not s2_images:
        raise UserError(f"The folder {folder} holds no Sentinel-2 image (13-band raster, .SAFE "
                        f"or .zip product); give the folder with the scenes or a CSV.")
    notes = []
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5
                                          else "")
        notes.append(f"Ignored {len(ignored)} file(s) that are neither S1 (2 bands) nor S2 "
                     f"(13 bands): {shown}.")
    by_key = {}
    for s1 in s1_images:
        by_key.setdefault(s1.name_key(), []).append(s1)
    stems = {}
    for s2 in s2_images:
        stems.setdefault(s2.stem, []).append(s2)
    scenes, used = [], set()
    for s2 in s2_images:
        if len(stems[s2.stem]) == 1:
            name = s2.stem
        else:   # the same name in several folders (s2/ and s2_cloudy/): the path tells them apart
            name = "__".join(Path(s2.relative).parent.parts + (s2.stem,))
        out = out_dir / f"{name}_restored.tif"
        scene = Scene(name=name, s2=str(s2.path), s1=None, out=str(out),
                      gate=str(out_dir / f"{name}_gate.tif"),
                      aoi=(default_aoi or (None, None))[0], aoi_crs=(default_aoi or (None, None))[1])
        if rule == "name":
            matches = by_key.get(s2.name_key(), [])
            if len(matches) > 1:
                scene.error = (f"Several S1 images pair with it by name "
                               f"({', '.join(m.relative for m in matches[:3])}); keep one, or "
                               f"list the pairs in a CSV.")
            elif matches:
                scene.s1 = str(matches[0].path)
                used.add(matches[0].path)
            else:
                scene.error = ("No S1 image in the folder has the same tile and date (or the "
                               "same name without words such as s1, s2, cloudy); add one, use "
                               "--pair overlap, or list the pairs in a CSV.")
        else:
            s1, scene.note = _pair_by_overlap(s2, s1_images)
            if s1 is None:
                scene.error = ("No S1 image in the folder overlaps it (or it has no "
                               "georeferencing); add one, or list the pairs in a CSV.")
            else:
                scene.s1 = str(s1.path)
                used.add(s1.path)
        scenes.append(scene)
    unused = [s1.relative for s1 in s1_images if s1.path not in used]
    if unused:
        notes.append(f"{len(unused)} S1 image(s) paired with no S2 image: "
                     + ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "") + ".")
    _check_unique(scenes, folder)
    return scenes, notes


def is_complete(scene: Scene) -> Optional[float]:
    """The megapixels of a scene whose two outputs exist and open, else None.

    The engine gives the outputs their names only once both are written and read back whole,
    so an output under its final name is a complete one.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        sizes = []
        for path in (scene.out, scene.gate):
            if not os.path.isfile(path):
                return None
            with rasterio.open(path) as dataset:
                sizes.append(dataset.width * dataset.height)
        return sizes[0] / 1e6 if sizes[0] == sizes[1] and sizes[0] > 0 else None
    except RasterioIOError:
        return None


def remove_dead_partials(scenes: list) -> None:
    """Sweep the temporary outputs that workers which are gone left in the scenes' folders.

    The engine removes its own on every failure and on cancel; this catches a local worker
    killed mid-scene (the cluster closed before it stopped). Temporary files name their
    writer's host and process, so those of live runs stay (core.partials).
    """
    from ..core.partials import remove_stale_partials

    for folder in sorted({Path(p).parent for scene in scenes for p in (scene.out, scene.gate)}):
        remove_stale_partials(folder)


# ---------------------------------------------------------------------------------------------
# The task each worker runs


def run_scene(job: dict, cancel_event: Optional[str] = None) -> dict:
    """One scene on a worker: the faces' entry point, every outcome as a plain dict."""
    from ..adaptation import remove_clouds
    from ..core.engine import RemovalRequest
    from ..core.errors import Cancelled, UserError as EngineUserError

    started = time.perf_counter()
    is_cancelled = _cancel_check(cancel_event)
    request = dict(job)
    if request.get("threads") is None:
        request["threads"] = _worker_share()
    if is_cancelled():
        return {"status": "cancelled", "message": "Cancelled before it started."}
    try:
        result = remove_clouds(RemovalRequest(**request), is_cancelled=is_cancelled)
    except Cancelled:
        return {"status": "cancelled", "seconds": time.perf_counter() - started,
                "message": "Cancelled; nothing was written."}
    except EngineUserError as exc:
        return {"status": "failed", "seconds": time.perf_counter() - started, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 (a bug: reported for this scene, the others go on)
        return {"status": "failed", "seconds": time.perf_counter() - started,
                "message": f"Internal error: {type(exc).__name__}: {exc} (report it)."}
    return {"status": "ok", "megapixels": result.megapixels, "seconds": result.seconds,
            "device": result.device, "backend": result.backend,
            "messages": list(result.messages)}


def _cancel_check(event_name: Optional[str]):
    """A cheap `is_cancelled()` for the engine: asks the scheduler at most twice a second."""
    if not event_name:
        return lambda: False
    from distributed import Event

    event = Event(event_name)
    state = {"asked": -math.inf, "set": False}

    def is_cancelled():
        now = time.monotonic()
        if not state["set"] and now - state["asked"] >= CANCEL_POLL_SECONDS:
            state["asked"] = now
            try:
                state["set"] = event.is_set()
            except Exception:  # noqa: BLE001 (scheduler unreachable: the client is gone)
                state["set"] = True
        return state["set"]

    return is_cancelled


def _worker_share() -> int:
    """CPU threads for one scene on this worker: its cores shared by the scenes it runs at once."""
    from ..core.backend_base import available_cores
    try:
        from distributed import get_worker
        at_once = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        at_once = 1
    return max(1, available_cores() // at_once)


def dask_setup(worker):
    """Worker preload of the local cluster: Ctrl-C is for the client, which cancels cleanly.

    A terminal sends SIGINT to every process of the foreground group, the local workers too;
    a worker killed mid-scene would leave its temporary files behind.
    """
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:   # not the main thread (a worker in the client's own process)
        pass


# ---------------------------------------------------------------------------------------------
# The cluster


def _gpu_ids() -> list:
    """Visible NVIDIA GPUs (honouring CUDA_VISIBLE_DEVICES), without importing torch."""
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in listed.splitlines()
                                             if l.startswith("GPU "))]


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 8.0


@dataclass
class LocalPlan:
    workers: int
    threads_per_worker: int
    threads_per_scene: int
    gpus: list

    def describe(self) -> str:
        where = (f"{len(self.gpus)} GPU(s) (one worker each)" if self.gpus else "CPU")
        return (f"local cluster: {self.workers} worker(s) x {self.threads_per_worker} scene(s) "
                f"at once, {self.threads_per_scene} CPU thread(s) per scene, {where}")


def plan_local_cluster(args, n_scenes: int) -> LocalPlan:
    """Size the local cluster: one worker per GPU, else one per core as memory allows."""
    from ..core.backend_base import available_cores

    for option, value in (("--workers", args.workers),
                          ("--threads-per-worker", args.threads_per_worker),
                          ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1 (got {value}).")
    cores = available_cores()
    per_worker = args.threads_per_worker or 1
    gpus = [] if args.device == "cpu" else _gpu_ids()
    if args.workers:
        workers = args.workers
    elif gpus:
        workers = len(gpus)
    else:
        workers = max(1, min(cores // per_worker, int(_memory_gb() // MEMORY_PER_WORKER_GB)))
    workers = max(1, min(workers, max(1, math.ceil(n_scenes / per_worker))))
    threads = args.threads or max(1, cores // (workers * per_worker))
    return LocalPlan(workers, per_worker, threads, gpus)


def start_local_cluster(plan: LocalPlan, dashboard_address: str):
    import logging

    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    preload = [__name__]
    if not plan.gpus:
        return LocalCluster(n_workers=plan.workers, threads_per_worker=plan.threads_per_worker,
                            processes=True, dashboard_address=dashboard_address,
                            silence_logs=logging.ERROR, preload=preload)
    # One worker per GPU, each seeing only its own device (what dask-cuda does).
    workers = {f"gpu-{i}": {"cls": Nanny, "options": {
        "nthreads": plan.threads_per_worker, "preload": preload, "silence_logs": logging.ERROR,
        "env": {"CUDA_VISIBLE_DEVICES": plan.gpus[i % len(plan.gpus)]}}}
        for i in range(plan.workers)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1",
                                               "dashboard_address": dashboard_address}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR)


def connect(args, n_scenes: int) -> tuple:
    """(client, cluster or None, description, threads per scene or None)."""
    from distributed import Client

    if args.scheduler:
        for option in ("workers", "threads_per_worker"):
            if getattr(args, option) is not None:
                print(f"note: --{option.replace('_', '-')} sizes a local cluster; the cluster at "
                      f"{args.scheduler} runs with its own workers.", file=sys.stderr)
        try:
            client = Client(args.scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"Cannot reach the Dask scheduler at {args.scheduler} ({exc}); check "
                            f"the address and that the scheduler is running.") from None
        workers = len(client.scheduler_info().get("workers", {}))
        return client, None, f"cluster at {args.scheduler} ({workers} worker(s) now)", args.threads
    plan = plan_local_cluster(args, n_scenes)
    cluster = start_local_cluster(plan, args.dashboard_address)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return client, cluster, plan.describe(), plan.threads_per_scene


# ---------------------------------------------------------------------------------------------
# Progress and summary


class SceneProgress:
    """Progress over scenes with an ETA: a redrawn bar on a terminal, else a line per scene."""

    def __init__(self, total: int, already: int, enabled: bool, tty: bool):
        self.total, self.done, self.already = total, already, already
        self.enabled, self.tty = enabled, tty
        self.started = time.monotonic()
        self.failed = 0

    def eta(self) -> str:
        ran = self.done - self.already
        if ran <= 0 or self.done >= self.total:
            return ""
        elapsed = time.monotonic() - self.started
        return f", ETA {elapsed / ran * (self.total - self.done):.0f} s"

    def update(self, scene: Scene, outcome: Outcome) -> None:
        self.done += 1
        self.failed += outcome.status == "failed"
        if not self.enabled:
            return
        line = f"{scene.name}: {outcome.status}"
        if outcome.status == "ok":
            line += f" ({outcome.megapixels:.2f} MP in {outcome.seconds:.1f} s on {outcome.device})"
        elif outcome.message:
            line += f": {outcome.message}"
        if self.tty:
            if outcome.status not in ("ok", "skipped"):
                sys.stderr.write("\r\033[K" + line + "\n")
            self.draw()
        else:
            elapsed = time.monotonic() - self.started
            print(f"[{self.done}/{self.total}] {line} ({elapsed:.0f} s{self.eta()})", flush=True)

    def draw(self) -> None:
        """Redraw the bar (a terminal only): called on each scene and about once a second."""
        if not (self.enabled and self.tty):
            return
        width = 30
        filled = int(round(width * self.done / max(self.total, 1)))
        elapsed = time.monotonic() - self.started
        sys.stderr.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {self.done}/"
                         f"{self.total} scenes, {self.failed} failed, {elapsed:.0f} s{self.eta()}"
                         + ("\n" if self.done >= self.total else ""))
        sys.stderr.flush()


def _format_number(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_rows(scenes: list, outcomes: list) -> list:
    rows = []
    for scene, outcome in zip(scenes, outcomes):
        message = outcome.message
        if outcome.status == "ok":
            message = " ".join(part for part in [scene.note] + list(outcome.messages) if part)
        rows.append({"scene": scene.name, "status": outcome.status,
                     "megapixels": _format_number(outcome.megapixels, 3),
                     "seconds": _format_number(outcome.seconds, 2), "device": outcome.device,
                     "message": message, "s2": scene.s2, "s1": scene.s1 or "",
                     "out": scene.out, "gate": scene.gate})
    return rows


def write_summary(path: Path, rows: list) -> None:
    """The summary CSV, written beside its target and renamed, so it is never half written."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UserError(f"Cannot write the summary {path} ({exc.strerror}); choose another "
                        f"--summary path.") from None


def print_table(rows: list, out=sys.stdout) -> None:
    shown = rows if len(rows) <= PRINT_ALL_ROWS else [r for r in rows if r["status"] != "ok"]
    columns = SUMMARY_COLUMNS[:6]
    width = {c: max([len(c)] + [len(r[c]) for r in shown]) for c in columns[:-1]}
    print("  ".join(c.ljust(width[c]) for c in columns[:-1]) + "  message", file=out)
    for row in shown:
        print("  ".join(row[c].ljust(width[c]) for c in columns[:-1]) + "  " + row["message"],
              file=out)
    if len(shown) < len(rows):
        print(f"({len(rows) - len(shown)} successful scenes not shown; see the summary CSV)",
              file=out)


# ---------------------------------------------------------------------------------------------
# The command


def _job(scene: Scene, args, threads) -> dict:
    """The scene's `RemovalRequest` fields (a plain dict travels to any worker)."""
    job = dict(s2_path=scene.s2, s1_path=scene.s1, out_path=scene.out, gate_path=scene.gate,
               aoi=scene.aoi, aoi_crs=scene.aoi_crs, model=args.model, backend=args.backend,
               device=args.device, tile_size=args.tile, overlap=args.overlap,
               s2_offset=args.s2_offset, threads=threads, batch_size=args.batch_size,
               raw_network=args.raw_network)
    if args.adapt:
        job.update(adapt=True, adapt_seconds=args.adapt_seconds, seed=args.seed)
        if args.save_adapted:
            job["save_adapted"] = str(Path(args.save_adapted).resolve() / f"{scene.name}.pt")
    return job


def _outcome_of(future) -> Outcome:
    from distributed import KilledWorker

    try:
        result = future.result()
    except KilledWorker:
        return Outcome("failed", message="The worker running this scene died (out of memory or "
                                         "crashed) each time it was tried; run it alone with "
                                         "sar-cloud-removal remove to see why.")
    except Exception as exc:  # noqa: BLE001 (e.g. a worker without this package)
        return Outcome("failed", message=f"The worker could not run the scene "
                                         f"({type(exc).__name__}: {exc}); every worker needs "
                                         f"sar-cloud-removal installed and the scene's paths.")
    return Outcome(result["status"], result.get("megapixels"), result.get("seconds"),
                   result.get("device", ""), result.get("message", ""),
                   result.get("messages", []))


def load_scenes(args) -> tuple:
    source = Path(args.input)
    default_aoi = parse_aoi(args.aoi) if args.aoi else None
    if source.is_dir() and not source.name.lower().endswith(".safe"):
        if not args.out_dir:
            raise UserError(f"{source} is a folder of images: give --out-dir for the restored "
                            f"images and gates.")
        scenes, notes = pair_folder(source, args.out_dir, args.pair, default_aoi)
        out_dir = Path(args.out_dir)
    elif source.is_file():
        scenes, notes = read_scene_csv(source, args.out_dir, default_aoi), []
        out_dir = Path(args.out_dir) if args.out_dir else source.resolve().parent
    else:
        raise UserError(f"The scene list {source} does not exist; give a CSV file or a folder "
                        f"of S1 and S2 images.")
    return scenes, notes, out_dir


def run(args):
    scenes, notes, out_dir = load_scenes(args)
    if args.out_dir:
        try:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the output folder {args.out_dir} ({exc.strerror}); "
                            f"choose another --out-dir.") from None
    if args.save_adapted:
        if not args.adapt:
            raise UserError("--save-adapted keeps the networks --adapt makes; add --adapt.")
        try:
            Path(args.save_adapted).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the folder {args.save_adapted} ({exc.strerror}); "
                            f"choose another --save-adapted folder.") from None
    summary_path = Path(args.summary) if args.summary else out_dir / SUMMARY_NAME
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        for scene in [s for s in scenes if s.note][:PRINT_ALL_ROWS]:
            print(f"{scene.name}: {scene.note}")
    outcomes = [None] * len(scenes)
    for index, scene in enumerate(scenes):
        if scene.error:
            outcomes[index] = Outcome("failed", message=scene.error)
        elif args.resume:
            megapixels = is_complete(scene)
            if megapixels is not None:
                outcomes[index] = Outcome("skipped", megapixels=megapixels,
                                          message="Complete outputs exist (--resume).")
    todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
    print(f"{len(scenes)} scene(s): {len(todo)} to restore, "
          f"{sum(o is not None and o.status == 'skipped' for o in outcomes)} already complete, "
          f"{sum(o is not None and o.status == 'failed' for o in outcomes)} not runnable.",
          flush=True)
    started = time.monotonic()
    cancelled = False
    if todo:
        cancelled = _run_on_cluster(args, scenes, outcomes, todo)
    rows = summary_rows(scenes, outcomes)
    write_summary(summary_path, rows)
    print()
    print_table(rows)
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("ok", "skipped", "failed", "cancelled")}
    print(f"\n{counts['ok']} restored, {counts['skipped']} skipped (complete), {counts['failed']} "
          f"failed, {counts['cancelled']} cancelled in {time.monotonic() - started:.1f} s; "
          f"summary: {summary_path}")
    if cancelled:
        print("Cancelled; finished scenes are complete, the others left no file.",
              file=sys.stderr)
        return 130
    return 0 if counts["failed"] == 0 and counts["cancelled"] == 0 else 1


def _run_on_cluster(args, scenes: list, outcomes: list, todo: list) -> bool:
    """Run the scenes `todo` on the cluster, filling `outcomes`; True when Ctrl-C cancelled."""
    from ..core.runtime_packages import require_package
    require_package("distributed", "dask and distributed (pip install -r requirements.txt)")
    from distributed import Event, wait

    client, cluster, description, threads = connect(args, len(todo))
    event_name = f"sar-cloud-removal-cancel-{uuid.uuid4().hex}"
    progress = SceneProgress(len(scenes), len(scenes) - len(todo), enabled=not args.quiet,
                             tty=sys.stderr.isatty())
    cancelled = False
    try:
        print(f"Running on a {description}.\nDask dashboard: {client.dashboard_link}", flush=True)
        event = Event(event_name, client=client)
        futures = {}
        for index in todo:
            future = client.submit(run_scene, _job(scenes[index], args, threads), event_name,
                                   key=f"scene-{index}-{uuid.uuid4().hex[:8]}", pure=False)
            futures[future] = index
        pending = set(futures)
        try:
            progress.draw()
            while pending:
                try:
                    done = wait(list(pending), timeout=1.0, return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    done = ()
                for future in sorted(done, key=futures.get):
                    index = futures[future]
                    outcomes[index] = _outcome_of(future)
                    pending.discard(future)
                    progress.update(scenes[index], outcomes[index])
                if not done:
                    progress.draw()
        except KeyboardInterrupt:
            cancelled = True
            print("\nCancelling: running scenes stop at their next tile batch ...",
                  file=sys.stderr, flush=True)
            event.set()
            _drain(pending, futures, scenes, outcomes)
        finally:
            try:
                event.clear()
            except Exception:  # noqa: BLE001 (the scheduler may be gone already)
                pass
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        if cancelled:
            remove_dead_partials([scenes[i] for i in todo if outcomes[i].status != "ok"])
    return cancelled


def _drain(pending: set, futures: dict, scenes: list, outcomes: list) -> None:
    """After Ctrl-C: let running scenes stop (the engine removes their temporary files)."""
    from distributed import wait

    try:
        wait(list(pending), timeout=CANCEL_WAIT_SECONDS)
    except KeyboardInterrupt:
        print("Stopping without waiting further.", file=sys.stderr)
    except Exception:  # noqa: BLE001 (distributed's TimeoutError)
        pass
    for future in pending:
        index = futures[future]
        outcome = _outcome_of(future) if future.done() else Outcome(
            "cancelled", message="Cancelled; nothing was written.")
        if outcome.status not in ("ok", "failed"):
            outcome = Outcome("cancelled", seconds=outcome.seconds,
                              message="Cancelled; nothing was written.")
        outcomes[index] = outcome
