"""`sar-cloud-removal evaluate`: score a model on folders of S1/S2 triplets, always beside the
cloudy-input baseline.

Every triplet runs through the engine itself (`core.engine.remove_clouds`: tiling, blending,
offset handling and keep-clear, on ONNX Runtime by default), so what is scored is what an analyst
gets from the file, not the training-time torch module. Each whole image is scored with the
SEN12MS-CR protocol metrics (core.metrics), then by region (clear, thin, thick cloud; see
training/regions.py), beside the cloudy input; the gate's calibration (mean per region and a
reliability table) and its AUC against the cloud mask are added. "Cloudy input" is the do-nothing
baseline: a model that does not beat it on the held-out scenes is not removing clouds.
"""
import json
import math
import time
from pathlib import Path

import numpy as np

from ..core import metrics
from ..core.backends import BACKENDS, DEVICES
from ..core.errors import UserError
from ..core.sensors import S2_SCALE
from .packed import find_packed, read_packed
from .regions import CLEAR, EDGE_DISTANCE, REGION_NAMES, inner_clear, triplet_regions
from .sen12mscr import SPLITS, find_triplets, read_triplet

REPORTED = ("psnr", "ssim", "mae", "sam", "cloud_mae", "gate_auc")


def load_triplets(folder, split=None, only=None) -> list:
    """The triplets of a packed folder or a SEN12MS-CR folder (either layout).

    `split` keeps one official SEN12MS-CR split; `only` keeps the named triplets (packed ids or
    SEN12MS-CR patch names), so a selection may leave a folder with none. A folder holding no
    triplets at all is an error: it is the wrong folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"The data folder {folder} does not exist; give a folder of SEN12MS-CR "
                        f"triplets or packed *_input/_target/_mask.tif files.")
    packed_ids = find_packed(folder)
    found = packed_ids or find_triplets(folder, split)
    if not found:
        raise UserError(f"No triplets were found in {folder}"
                        + (f" in the {split} split" if split else "")
                        + "; give a SEN12MS-CR folder (s1/s2/s2_cloudy) or packed triplets.")
    if packed_ids:
        return [read_packed(folder, i) for i in packed_ids if only is None or i in only]
    return [read_triplet(t) for t in found if only is None or t.name in only]


def _pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    h, w = array.shape[-2:]
    pad = ((0, 0),) * (array.ndim - 2) + ((0, -h % multiple), (0, -w % multiple))
    return np.pad(array, pad, mode="edge")


# Gate bins of the reliability table: how often a pixel given gate g is really clear.
RELIABILITY_EDGES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)
_REGION_METRICS = ("psnr", "ssim", "mae", "sam")


def region_metrics(pred: np.ndarray, target: np.ndarray, regions: np.ndarray) -> dict:
    """PSNR, SSIM, MAE and SAM over each region (clear, thin, thick); NaN for an empty one.

    SSIM is averaged from one whole-image SSIM map, so windows at region borders see their
    neighbours, as in the protocol's cloud-only SSIM.
    """
    ssim_values = metrics.ssim_map(pred, target)
    out = {}
    for code, name in enumerate(REGION_NAMES):
        mask = regions == code
        out[f"{name}_psnr"] = metrics.psnr(pred, target, mask)
        out[f"{name}_mae"] = metrics.mae(pred, target, mask)
        out[f"{name}_sam"] = metrics.sam(pred, target, mask)
        out[f"{name}_ssim"] = float(ssim_values[:, mask].mean()) if mask.any() else math.nan
    return out


def gate_calibration(gate: np.ndarray, regions: np.ndarray) -> dict:
    """Mean gate per region and on inner clear ground (regions.inner_clear), and, per
    reliability bin, the pixel count and how many are clear."""
    out = {f"gate_{name}": float(gate[regions == code].mean()) if (regions == code).any()
           else math.nan for code, name in enumerate(REGION_NAMES)}
    inner = inner_clear(regions)
    out["gate_inner_clear"] = float(gate[inner].mean()) if inner.any() else math.nan
    bins = np.clip(np.digitize(gate.ravel(), RELIABILITY_EDGES[1:-1]), 0,
                   len(RELIABILITY_EDGES) - 2)
    clear = (regions.ravel() == CLEAR)
    out["reliability_counts"] = np.bincount(bins, minlength=len(RELIABILITY_EDGES) - 1).tolist()
    out["reliability_clear"] = np.bincount(bins, weights=clear,
                                           minlength=len(RELIABILITY_EDGES) - 1).tolist()
    return out


def score_prediction(triplet, restored: np.ndarray, gate: np.ndarray) -> dict:
    """One image's row: model and cloudy-input metrics overall and per region, the gate's
    calibration, and the gate AUC where a mask exists. `restored` is 13×H×W on [0, 1] (clipped
    here, the range the protocol compares on), `gate` H×W."""
    regions = triplet_regions(triplet)
    kept = kept_fractions(restored, triplet.cloudy, regions)   # before clipping: DN above 10000
    restored = np.clip(restored, 0.0, 1.0)
    valid = np.isfinite(gate)
    gate = np.where(valid, gate, 0.0)
    row = {"name": triplet.name,
           "model": {**metrics.image_metrics(restored, triplet.target, triplet.cloud_mask),
                     **region_metrics(restored, triplet.target, regions)},
           "cloudy_input": {**metrics.image_metrics(triplet.cloudy, triplet.target,
                                                    triplet.cloud_mask),
                            **region_metrics(triplet.cloudy, triplet.target, regions)},
           "gate_mean": float(gate.mean()),
           "region_fractions": [float((regions == c).mean()) for c in range(len(REGION_NAMES))],
           "calibration": gate_calibration(gate, regions)}
    row["model"].update({k: v for k, v in row["calibration"].items() if k.startswith("gate_")})
    row["model"].update(kept)
    row["model"]["gate_mae"] = float(np.abs(gate - (regions == CLEAR)).mean())
    if triplet.cloud_mask is not None:
        row["cloud_fraction"] = float(triplet.cloud_mask.mean())
        row["model"]["gate_auc"] = metrics.gate_auc(gate, triplet.cloud_mask)
    return row


def kept_fractions(restored: np.ndarray, cloudy: np.ndarray, regions: np.ndarray) -> dict:
    """Which share of the clear pixels, and of all pixels, come out as the cloudy input's own DN
    in every band ("clear_kept", "kept"): what keep-clear promises, judged pixel by pixel.

    The mask says clear where the gate may not (hazy ground, bright roofs); a clear pixel the
    gate holds below the keep level is repainted, and this is the share that was not.
    """
    same = (np.rint(restored * S2_SCALE) == np.rint(cloudy * S2_SCALE)).all(axis=0)
    clear = regions == CLEAR
    return {"clear_kept": float(same[clear].mean()) if clear.any() else math.nan,
            "kept": float(same.mean())}


def score_triplet(predict, triplet, size_multiple: int = 1) -> dict:
    """Score `predict(s2, s1)` (1×C×H×W float32 arrays in, (restored, gate) of the same layout
    out) on one triplet; training's validation calls the network this way."""
    return score_prediction(triplet, *predict_triplet(predict, triplet, size_multiple))


def predict_triplet(predict, triplet, size_multiple: int = 1) -> tuple:
    """(restored 13×H×W, gate H×W) of `predict(s2, s1)` on one whole triplet: the inputs padded
    to the network's size multiple (edge values), the outputs cropped back to the scene."""
    h, w = triplet.target.shape[-2:]
    s2 = _pad_to_multiple(triplet.cloudy, size_multiple)[None]
    s1 = _pad_to_multiple(triplet.s1, size_multiple)[None]
    restored, gate = predict(s2.astype(np.float32), s1.astype(np.float32))
    return restored[0, :, :h, :w], gate[0, 0, :h, :w]


# Packed triplets carry no georeferencing; the engine needs some, so they are written on this
# arbitrary 10 m UTM grid (the pixels, not the place, are what is scored).
_STAND_IN_CRS = "EPSG:32631"
_STAND_IN_TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def write_triplet_inputs(triplet, folder: Path):
    """The triplet's cloudy S2 (uint16 DN) and S1 (float32 dB) as GeoTIFFs the engine reads."""
    import rasterio
    from rasterio.transform import Affine

    from ..core.sensors import S1_DB_RANGE
    h, w = triplet.target.shape[-2:]
    profile = {"driver": "GTiff", "height": h, "width": w, "crs": _STAND_IN_CRS,
               "transform": Affine(*_STAND_IN_TRANSFORM)}
    s2_path, s1_path = folder / "s2.tif", folder / "s1.tif"
    with rasterio.open(s2_path, "w", count=13, dtype="uint16", **profile) as dst:
        dst.write(np.rint(triplet.cloudy * S2_SCALE).astype(np.uint16))
    low, high = S1_DB_RANGE
    with rasterio.open(s1_path, "w", count=2, dtype="float32", **profile) as dst:
        dst.write((triplet.s1 * (high - low) + low).astype(np.float32))
    return s2_path, s1_path


def restore_through_engine(triplet, folder: Path, **request) -> tuple:
    """Run the faces' entry point (scene adaptation when asked, then the engine: tiling,
    blending, offset, keep-clear) on one triplet; returns (restored on [0, 1], gate) as the
    user's files hold them, and the run's result."""
    import rasterio

    from ..adaptation import remove_clouds
    from ..core.engine import RemovalRequest

    folder.mkdir(parents=True, exist_ok=True)
    s2_path, s1_path = write_triplet_inputs(triplet, folder)
    result = remove_clouds(RemovalRequest(s2_path=str(s2_path), s1_path=str(s1_path),
                                          out_path=str(folder / "restored.tif"),
                                          s2_offset=0, **request))
    with rasterio.open(result.out_path) as src:
        restored = src.read().astype(np.float32) / np.float32(S2_SCALE)
    with rasterio.open(result.gate_path) as src:
        gate = src.read(1).astype(np.float32)
    return restored, gate, result


# Cloud cover of the --simulated scenes, and their seed (the same clouds at every run).
SIMULATED_COVERAGE = 0.6
SIMULATED_SEED = 0


def simulated_scenes(data_root, sources, seed: int = SIMULATED_SEED) -> list:
    """Clear pairs of the named sources (a comma-separated string or a sequence of names) under
    fixed simulated clouds at SIMULATED_COVERAGE, as scored triplets."""
    from .dataset import simulated_triplets
    from .pairs import SOURCES, load_clear_pairs

    if isinstance(sources, str):
        sources = sources.split(",")
    names = tuple(n.strip() for n in sources if n.strip())
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise UserError(f"Unknown --simulated source {', '.join(unknown) or '(none)'}; give "
                        f"some of {', '.join(SOURCES)}.")
    return simulated_triplets(load_clear_pairs(Path(data_root), names), seed,
                              coverages=(SIMULATED_COVERAGE,))


def summarise(rows) -> dict:
    """Means over images for the model and the baseline (NaN-skipping, as the protocol does),
    and the reliability table summed over every pixel of every image."""
    means = {side: metrics.mean_over_images([r[side] for r in rows])
             for side in ("model", "cloudy_input")}
    counts = np.sum([r["calibration"]["reliability_counts"] for r in rows], axis=0)
    clear = np.sum([r["calibration"]["reliability_clear"] for r in rows], axis=0)
    means["reliability"] = [
        {"gate_from": lo, "gate_to": hi, "pixels": int(n),
         "clear_fraction": float(c / n) if n else math.nan}
        for lo, hi, n, c in zip(RELIABILITY_EDGES[:-1], RELIABILITY_EDGES[1:], counts, clear)]
    means["sam_not_worse_than_input"] = int(sum(
        r["model"]["sam"] <= r["cloudy_input"]["sam"] for r in rows))
    return means


def format_cell(value, digits: int = 4) -> str:
    """A metric for a table: `digits` decimals, or "–" where it is unknown (None or NaN)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def format_table(rows, means) -> str:
    """Plain-text tables: per image and mean metrics (model over baseline), the same by region,
    the gate's means by region and its reliability."""
    def table(keys, title):
        width = 20
        header = f"{title:<34}" + "".join(f"{k:^{width}}" for k in keys)
        lines = [header, "-" * len(header)]
        for name, model, base in [(r["name"], r["model"], r["cloudy_input"]) for r in rows] + \
                [("MEAN", means["model"], means["cloudy_input"])]:
            line = f"{name[:33]:<34}"
            for key in keys:
                baseline = f"({format_cell(base[key])})" if key in base else ""
                line += f"{format_cell(model.get(key)):>9} {baseline:<{width - 10}}"
            lines.append(line)
        return lines

    lines = table(REPORTED, "image")
    for region in REGION_NAMES:
        lines += [""] + table([f"{region}_{k}" for k in _REGION_METRICS], f"{region} pixels")
    lines += ["", "values: model (cloudy input); gate_auc: gate vs cloud mask, 0.5 = chance",
              f"SAM not worse than the input's on {means['sam_not_worse_than_input']} of "
              f"{len(rows)} images", "",
              "gate by region (mean): " + ", ".join(
                  f"{r} {format_cell(means['model'].get('gate_' + r))}" for r in REGION_NAMES)
              + f"; clear > {EDGE_DISTANCE} px from cloud "
                f"{format_cell(means['model'].get('gate_inner_clear'))}",
              "kept as the input's DN in every band: "
              f"{format_cell(means['model'].get('clear_kept'))} of clear pixels, "
              f"{format_cell(means['model'].get('kept'))} of all",
              "gate reliability:   gate bin     pixels   clear fraction"]
    for b in means["reliability"]:
        lines.append(f"                  {b['gate_from']:.2f}-{b['gate_to']:.2f} "
                     f"{b['pixels']:>10}   {format_cell(b['clear_fraction'])}")
    return "\n".join(lines)


def json_safe(value):
    """NaN and infinity become null: strict JSON has no spelling for them."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--data", action="append", default=[], metavar="FOLDER",
                        help="folder of SEN12MS-CR triplets or packed triplets (repeatable)")
    parser.add_argument("--simulated", default=None, metavar="SOURCES",
                        help="also score clear pairs of these sources (comma-separated, e.g. "
                             "sen1floods11,terramind, read from --data-root) under seeded "
                             "simulated clouds at 60 %% cover, where the truth is the same date")
    parser.add_argument("--data-root", default="../shared/data", metavar="FOLDER",
                        help="root of the shared data for --simulated (default %(default)s)")
    parser.add_argument("--model", default="default",
                        help="registered model name or path to a .onnx / .pt file")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated triplet names or packed ids to score (default all)")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="score only this official SEN12MS-CR split of the folders")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default all)")
    parser.add_argument("--raw-network", action="store_true",
                        help="score the network's output everywhere (clear pixels not kept)")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in pixels (default: the model's own)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="tile overlap in pixels (default: the model's own)")
    parser.add_argument("--out", default=None, metavar="REPORT.json",
                        help="write the full report (per-image rows and means) as JSON, "
                             "and the printed tables beside it as REPORT.txt")
    parser.add_argument("--sheet", default=None, metavar="SHEET.png",
                        help="write the picture sheet (cloudy | restored | truth | gate per "
                             "image, true colour with a fixed stretch)")


def run(args) -> int:
    import tempfile

    only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
    if not args.data and not args.simulated:
        raise UserError("Nothing to score; give --data FOLDER (triplets) and/or --simulated "
                        "SOURCES (clear pairs under simulated clouds).")
    triplets = [t for folder in args.data for t in load_triplets(folder, args.split, only)]
    if args.simulated:
        triplets += simulated_scenes(args.data_root, args.simulated)
    missing = sorted(only - {t.name for t in triplets}) if only else []
    if missing:
        raise UserError(f"The selected triplets {', '.join(missing)} are not in the data "
                        f"folders; check the names given to --only.")
    started = time.perf_counter()
    rows, pictures, notes, result = [], [], [], None
    with tempfile.TemporaryDirectory(prefix="sar-cr-evaluate-") as work:
        for index, triplet in enumerate(triplets):
            restored, gate, result = restore_through_engine(
                triplet, Path(work) / str(index), model=args.model, backend=args.backend,
                device=args.device, threads=args.threads, raw_network=args.raw_network,
                tile_size=args.tile, overlap=args.overlap)
            rows.append(score_prediction(triplet, restored, gate))
            notes += [m for m in result.messages if m not in notes]
            if args.sheet:
                pictures.append((triplet.name, triplet.cloudy, restored, triplet.target, gate))
    means = summarise(rows)
    report = {"model": {"name": result.model_name, "requested": args.model,
                        "backend": result.backend, "device": result.device,
                        "keep_clear": not args.raw_network},
              "data": [str(Path(d)) for d in args.data], "images": rows, "mean": means,
              "seconds": round(time.perf_counter() - started, 2), "messages": notes}
    table = format_table(rows, means)
    print(table)
    if args.out:
        write_json_report(Path(args.out), report, table)
    if args.sheet:
        from .picture_sheet import write_picture_sheet

        write_picture_sheet(Path(args.sheet), pictures)
        print(f"picture sheet written to {args.sheet}")
    return 0


def write_json_report(out: Path, report: dict, table: str = None) -> None:
    """The report as JSON at `out`; with `table`, the same figures as printed at `out`.txt, so
    the text beside a committed report can never describe another run."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_safe(report), indent=2))
        if table is not None:
            out.with_suffix(".txt").write_text(table + "\n")
    except OSError as exc:
        raise UserError(f"Cannot write the report to {out} ({exc.strerror}); choose a "
                        f"writable path.") from exc
    print(f"report written to {out}")
