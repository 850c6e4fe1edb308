"""`python -m sar_cloud_removal.training.keep_thresholds --config CFG --checkpoint CKPT`: score
pairs of keep-clear levels (core/keep_clear.py: KEEP_NONE, KEEP_FULL), and with `--shut` the
output blend's shut level of IB-HFN (`output_shut`, a setting that changes no weight), on a
training config's selection scenes, never on the report scenes, so they are chosen like a
checkpoint.

For each combination it prints the mean PSNR, SSIM and SAM over the selection scenes and the
share of their clear pixels that would be kept bit for bit.
"""
import argparse
import itertools

import numpy as np

from ..core import keep_clear as kc
from ..core import metrics
from .evaluate import predict_triplet
from .regions import CLEAR, triplet_regions
from .train import build_data, load_config

FULL_LEVELS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
NONE_LEVELS = (0.5, 0.6, 0.65, 0.7, 0.8)


def main(argv=None) -> int:
    import torch

    from ..models.export import load_network

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shut", default=None, metavar="LEVELS",
                        help="comma-separated output_shut levels to try (IB-HFN); default: the "
                             "checkpoint's own")
    args = parser.parse_args(argv)
    _, selection = build_data(load_config(args.config))
    shuts = [float(v) for v in args.shut.split(",")] if args.shut else [None]
    print(f"{len(selection)} selection scenes: " + ", ".join(t.name for t in selection))
    print("shut  keep_none keep_full   psnr    ssim    sam   clear kept")
    for shut in shuts:
        network, _ = load_network(args.checkpoint,
                                  {"output_shut": shut} if shut is not None else None)
        outputs = []

        def predict(s2, s1):
            out = network(torch.from_numpy(s2), torch.from_numpy(s1))
            return out.restored.numpy(), out.gate.numpy()

        with torch.no_grad():   # whole scenes, padded as validation pads them
            for t in selection:
                restored, gate = predict_triplet(predict, t, network.size_multiple)
                outputs.append((np.clip(restored, 0, 1), gate))
        _print_levels("-" if shut is None else f"{shut:.2f}", selection, outputs)
    return 0


def _print_levels(shut: str, selection, outputs) -> None:
    for none, full in itertools.product(NONE_LEVELS, FULL_LEVELS):
        if none >= full:
            continue
        rows, kept, clear_total = [], 0, 0
        for t, (restored, gate) in zip(selection, outputs):
            weight = kc.keep_weight(gate, none, full)
            result = kc.keep_clear(restored, t.cloudy, weight[None])
            rows.append(metrics.image_metrics(result, t.target))
            clear = triplet_regions(t) == CLEAR
            kept += int((weight[clear] >= 1).sum())
            clear_total += int(clear.sum())
        means = metrics.mean_over_images(rows)
        print(f"{shut:>4}  {none:9.2f} {full:9.2f} {means['psnr']:7.3f} {means['ssim']:7.4f} "
              f"{means['sam']:6.3f} {kept / max(clear_total, 1):8.1%}")


if __name__ == "__main__":
    raise SystemExit(main())
