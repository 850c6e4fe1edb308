"""`sar-cloud-removal evaluate`: score a model on folders of S1/S2 triplets, always beside the
cloudy-input baseline.

The model runs through the engine's own backends (ONNX Runtime by default), so the file an analyst
would use is what gets scored, not the training-time torch module. Each whole image is scored with
the SEN12MS-CR protocol metrics (core.metrics); cloud-only metrics and the gate's AUC against the
cloud mask are added where a mask exists (packed triplets). "Cloudy input" is the do-nothing
baseline: a model that does not beat it on the held-out scenes is not removing clouds.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ..core import metrics
from ..core.backends import BACKENDS, DEVICES
from ..core.errors import UserError
from .packed import find_packed, read_packed
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


def score_triplet(predict, triplet, size_multiple: int = 1) -> dict:
    """One image's row: model and cloudy-input metrics, and the gate AUC where a mask exists.

    `predict(s2, s1)` takes 1×C×H×W float32 arrays and returns (restored, gate) of the same
    layout. The prediction is clipped to [0, 1], the range the protocol compares on.
    """
    h, w = triplet.target.shape[-2:]
    s2 = _pad_to_multiple(triplet.cloudy, size_multiple)[None]
    s1 = _pad_to_multiple(triplet.s1, size_multiple)[None]
    restored, gate = predict(s2.astype(np.float32), s1.astype(np.float32))
    restored = np.clip(restored[0, :, :h, :w], 0.0, 1.0)
    gate = gate[0, 0, :h, :w]
    row = {"name": triplet.name,
           "model": metrics.image_metrics(restored, triplet.target, triplet.cloud_mask),
           "cloudy_input": metrics.image_metrics(triplet.cloudy, triplet.target,
                                                 triplet.cloud_mask),
           "gate_mean": float(gate.mean())}
    if triplet.cloud_mask is not None:
        row["cloud_fraction"] = float(triplet.cloud_mask.mean())
        row["model"]["gate_auc"] = metrics.gate_auc(gate, triplet.cloud_mask)
    return row


def summarise(rows) -> dict:
    """Means over images for the model and the baseline (NaN-skipping, as the protocol does)."""
    return {side: metrics.mean_over_images([r[side] for r in rows])
            for side in ("model", "cloudy_input")}


def format_table(rows, means) -> str:
    """A plain-text table of per-image and mean metrics, model over baseline."""
    width = 20
    header = f"{'image':<26}" + "".join(f"{k:^{width}}" for k in REPORTED)
    lines = [header, "-" * len(header)]

    def cell(value) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.4f}"

    def cells(model, base):
        out = ""
        for key in REPORTED:
            baseline = f"({cell(base[key])})" if key in base else ""
            out += f"{cell(model.get(key)):>9} {baseline:<{width - 10}}"
        return out

    for row in rows:
        lines.append(f"{row['name']:<26}" + cells(row["model"], row["cloudy_input"]))
    lines.append(f"{'MEAN':<26}" + cells(means["model"], means["cloudy_input"]))
    lines.append("values: model (cloudy input); gate_auc: gate vs cloud mask, 0.5 = chance")
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
    parser.add_argument("--data", action="append", required=True, metavar="FOLDER",
                        help="folder of SEN12MS-CR triplets or packed triplets (repeatable)")
    parser.add_argument("--model", default="default",
                        help="registered model name or path to a .onnx / .pt file")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated triplet names or packed ids to score (default all)")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="score only this official SEN12MS-CR split of the folders")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default all)")
    parser.add_argument("--out", default=None, metavar="REPORT.json",
                        help="write the full report (per-image rows and means) as JSON")


def run(args) -> int:
    from ..core.backends import create_backend
    from ..core.model_spec import load_spec, resolve_model

    only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
    triplets = [t for folder in args.data for t in load_triplets(folder, args.split, only)]
    missing = sorted(only - {t.name for t in triplets}) if only else []
    if missing:
        raise UserError(f"The selected triplets {', '.join(missing)} are not in the data "
                        f"folders; check the names given to --only.")
    files = resolve_model(args.model)
    spec = load_spec(files)
    started = time.perf_counter()
    with create_backend(files, spec, args.backend, args.device, args.threads) as backend:
        rows = [score_triplet(backend.run, t, spec.size_multiple) for t in triplets]
        backend_name, device, notes = backend.name, backend.device, list(backend.messages)
    means = summarise(rows)
    report = {"model": {"name": spec.name, "version": spec.version,
                        "architecture": spec.architecture,
                        "files": [str(p) for p in files.paths],
                        "backend": backend_name, "device": device},
              "data": [str(Path(d)) for d in args.data], "images": rows, "mean": means,
              "seconds": round(time.perf_counter() - started, 2), "messages": notes}
    for note in notes:
        print(note, file=sys.stderr)
    print(format_table(rows, means))
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(json_safe(report), indent=2))
        except OSError as exc:
            raise UserError(f"Cannot write the report to {out} ({exc.strerror}); choose a "
                            f"writable path.") from exc
        print(f"report written to {out}")
    return 0
