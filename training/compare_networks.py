"""The seed networks side by side on one protocol: `python -m
sar_cloud_removal.training.compare_networks`.

    python -m sar_cloud_removal.training.compare_networks \\
        --data ../shared/data/sen12mscr/packed --only 3968,4065,4287,4294,4433,4438 \\
        --models ibhfn,runs/compare/ibhfn/ibhfn-compare.onnx,dsen2cr,mmcanet,sgbafm \\
        --out docs/eval/compare.json --sheet docs/images/compare-sheet.png

No paper compares these networks on one protocol, so each row here is measured the same way:
its size (parameters, and GMAC per 256² patch, of the network its spec builds), the evaluation
through the engine on the same scenes as `evaluate` runs it (tiling, blending, keep-clear at the
model's own levels), and its CPU throughput through the engine (the bench's measurement on its
generated 4 MP scene, in a child process). It prints one markdown table (docs/EVALUATION.md and
the README hold it) and writes a picture sheet with one restored column per model, on the sheet's
fixed stretch, so networks compare pixel for pixel.

The throughput needs a quiet machine: run it when no training shares the cores.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..core.errors import UserError
from .evaluate import (format_cell, load_triplets, restore_through_engine, score_prediction,
                       summarise, write_json_report)
from .regions import REGION_NAMES

# The bench's smallest scene: large enough that loading the model and opening the files are a
# small share of the time (at 1 MP two quiet runs of one model differed by 20 %).
THROUGHPUT_MEGAPIXELS = 4.0
REGION_COLUMNS = ("psnr", "ssim", "sam")


def network_size(model: str) -> dict:
    """Parameters and GMAC per 256² patch of the network the model's spec builds."""
    from ..core.model_spec import load_spec, resolve_model
    from ..models.complexity import count_macs, count_parameters
    from ..models.registry import build

    spec = load_spec(resolve_model(model))
    network = build(spec.architecture, **spec.config)
    return {"name": spec.name, "version": spec.version, "architecture": spec.architecture,
            "parameters": count_parameters(network), "gmac_256": count_macs(network, 256) / 1e9,
            "tile_size": spec.tile_size, "overlap": spec.overlap}


def engine_throughput(model: str, workdir: Path, backend: str) -> dict:
    """End-to-end and bare-model MP/s on the bench's generated scene (cached in `workdir`)."""
    from ..cli.bench import cached_scene, measure_engine

    scene = cached_scene(workdir, THROUGHPUT_MEGAPIXELS)
    (workdir / "outputs").mkdir(parents=True, exist_ok=True)
    measured = measure_engine(scene, workdir / "outputs" / Path(model).stem, model=model,
                              backend=backend, device="cpu")
    return {"mp_per_s": measured["megapixels"] / measured["seconds"],
            "model_mp_per_s": measured["model_mp_per_s"], "peak_rss_mb": measured["peak_rss_mb"],
            "megapixels": measured["megapixels"]}


def markdown_table(rows: list, baseline: dict) -> str:
    """One line per model and the cloudy input: size, speed, overall and per-region metrics,
    the gate's means by region and how often SAM is no worse than the input's."""
    regions = [f"{region}_{key}" for region in REGION_NAMES for key in REGION_COLUMNS]
    titles = (["model", "params (M)", "GMAC/256²", "MP/s CPU", "PSNR", "SSIM", "MAE", "SAM°"]
              + [f"{key.split('_')[0]} {key.split('_')[1].upper()}" for key in regions]
              + ["gate clear / thin / thick", "gate AUC", "SAM ≤ input"])
    lines = ["| " + " | ".join(titles) + " |", "|---" * len(titles) + "|"]

    def metric_cells(means: dict) -> list:
        return ([format_cell(means.get("psnr"), 2), format_cell(means.get("ssim"), 3),
                 format_cell(means.get("mae"), 4), format_cell(means.get("sam"), 2)]
                + [format_cell(means.get(key), 3 if key.endswith("ssim") else 2)
                   for key in regions])

    lines.append("| cloudy input | – | – | – | " + " | ".join(metric_cells(baseline))
                 + " | – | – | – |")
    for row in rows:
        means = row["mean"]["model"]
        gates = " / ".join(format_cell(means.get(f"gate_{region}"), 2) for region in REGION_NAMES)
        cells = ([f"{row['name']} {row['version']}", format_cell(row["parameters"] / 1e6, 2),
                  format_cell(row["gmac_256"], 1), format_cell(row.get("mp_per_s"), 2)]
                 + metric_cells(means)
                 + [gates, format_cell(means.get("gate_auc"), 3),
                    f"{row['mean']['sam_not_worse_than_input']} of {len(row['images'])}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(models: list, triplets: list, backend: str, throughput: bool, workdir: Path) -> tuple:
    """(one row per model, the cloudy input's means, per-scene restored images per model)."""
    rows, restored_by_model, baseline = [], [], None
    for model in models:
        print(f"{model}: scoring {len(triplets)} scenes through the engine ...", flush=True)
        row = network_size(model)
        scored, pictures = [], []
        with tempfile.TemporaryDirectory(prefix="sar-cr-compare-") as work:
            for index, triplet in enumerate(triplets):
                restored, gate, _ = restore_through_engine(
                    triplet, Path(work) / str(index), model=model, backend=backend,
                    device="cpu")
                scored.append(score_prediction(triplet, restored, gate))
                pictures.append(restored)
        row["mean"] = summarise(scored)
        row["images"] = scored
        baseline = row["mean"]["cloudy_input"]
        if throughput:
            row.update(engine_throughput(model, workdir, backend))
        rows.append(row)
        restored_by_model.append(pictures)
    return rows, baseline, restored_by_model


def write_comparison_sheet(path: Path, triplets: list, rows: list, restored_by_model: list):
    """CLOUDY | one restored column per model | TRUTH, one row per scene."""
    from .picture_sheet import rgb_panel, write_sheet

    titles = ["CLOUDY"] + [f"{row['name']} {row['version']}" for row in rows] + ["TRUTH"]
    write_sheet(path, titles, [
        [rgb_panel(t.cloudy)] + [rgb_panel(images[i]) for images in restored_by_model]
        + [rgb_panel(t.target)] for i, t in enumerate(triplets)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, metavar="FOLDER",
                        help="folder of packed or SEN12MS-CR triplets")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated triplet names or packed ids (default all)")
    parser.add_argument("--models", required=True, metavar="NAME|PATH,...",
                        help="registered model names or .onnx/.pt paths, one row each")
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--no-throughput", action="store_true",
                        help="skip the engine throughput (e.g. while training shares the CPU)")
    parser.add_argument("--workdir", default="bench_output", type=Path,
                        help="where the throughput scene is generated and cached")
    parser.add_argument("--out", default=None, type=Path, metavar="COMPARE.json")
    parser.add_argument("--sheet", default=None, type=Path, metavar="SHEET.png")
    args = parser.parse_args(argv)
    try:
        only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
        triplets = load_triplets(args.data, only=only)
        if not triplets:
            raise UserError(f"No triplets to score in {args.data}; check --data and --only.")
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        rows, baseline, restored = compare(models, triplets, args.backend,
                                           not args.no_throughput, args.workdir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(rows, baseline))
    if args.out:
        write_json_report(args.out, {"scenes": [t.name for t in triplets], "backend": args.backend,
                                 "cloudy_input": baseline, "models": rows})
    if args.sheet:
        write_comparison_sheet(args.sheet, triplets, rows, restored)
        print(f"picture sheet written to {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
