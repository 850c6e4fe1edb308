"""Markdown tables from `evaluate --out` reports, for docs/EVALUATION.md and model cards.

    python -m sar_cloud_removal.training.report_table REPORT.json [REPORT.json ...]

One row per report (the model's means on that report's images), preceded by the cloudy-input
baseline of the first report; all reports must cover the same images, or the rows would not be
comparable, and that is checked.
"""
import argparse
import json
import sys
from pathlib import Path

COLUMNS = (("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("mae", "MAE ↓"), ("sam", "SAM° ↓"),
           ("cloud_mae", "cloud MAE ↓"), ("gate_auc", "gate AUC ↑"))


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def markdown_table(reports: list) -> str:
    """Baseline row then one row per report, same images required."""
    images = [r["name"] for r in reports[0]["images"]]
    for report in reports[1:]:
        if [r["name"] for r in report["images"]] != images:
            raise ValueError("the reports cover different images; evaluate all on the same data")
    lines = ["| model | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    baseline = reports[0]["mean"]["cloudy_input"]
    lines.append("| cloudy input (baseline) | "
                 + " | ".join(_cell(baseline.get(key)) for key, _ in COLUMNS) + " |")
    for report in reports:
        model = report["model"]
        label = f"{model['name']} {model['version']}"
        lines.append(f"| {label} | "
                     + " | ".join(_cell(report["mean"]["model"].get(key)) for key, _ in COLUMNS)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(markdown_table([json.loads(p.read_text()) for p in args.reports]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
