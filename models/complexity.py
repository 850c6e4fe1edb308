"""How big and how costly a network is: parameters, multiply-accumulates per 256² patch and CPU
forward time, so architectures can be compared on the numbers the literature reports (its
"FLOPs" per 256² patch are MACs).

MACs are counted with forward hooks on convolutions and linear layers, which dominate; pooling,
activations and interpolation are left out, as is usual.

Run `python -m sar_cloud_removal.models.complexity` for a table of the registered networks.
"""
import argparse
import time

import torch
from torch import nn

from .network_io import S1_CHANNELS, S2_CHANNELS
from .registry import ARCHITECTURES, build


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] \
            * module.kernel_size[1]
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, size: int = 256) -> int:
    """Multiply-accumulates of one forward pass on one size×size patch (eval mode).

    A network that takes only multiples of its `size_multiple` (MMCANet with 7-px windows: 56;
    SG-BAFM: 112) runs on the next multiple up and its count is scaled to size² by area: every
    layer here (convolutions, attention inside fixed windows) costs the same per pixel.
    """
    multiple = getattr(model, "size_multiple", 1)
    run = -(-size // multiple) * multiple
    return round(_macs_at(model, run) * (size / run) ** 2)


def _macs_at(model: nn.Module, size: int) -> int:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += _layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, S2_CHANNELS, size, size), torch.zeros(1, S1_CHANNELS, size, size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def cpu_forward_ms(model: nn.Module, size: int = 256, batch: int = 4, repeats: int = 3) -> float:
    """Median wall time of an eval forward pass, per patch, in milliseconds."""
    model.eval()
    s2, s1 = torch.rand(batch, S2_CHANNELS, size, size), torch.rand(batch, S1_CHANNELS, size, size)
    times = []
    with torch.inference_mode():
        model(s2, s1)   # warm-up: first-call allocations
        for _ in range(repeats):
            start = time.perf_counter()
            model(s2, s1)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000.0 / batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-timing", action="store_true", help="skip the CPU timing")
    args = parser.parse_args(argv)
    print(f"{'network':10} {'params (M)':>10} {'GMAC/' + str(args.size) + '²':>12} "
          f"{'CPU ms/patch':>13}  (batch {args.batch}, {torch.get_num_threads()} threads)")
    for name in ARCHITECTURES:
        model = build(name)
        timing = "" if args.no_timing else f"{cpu_forward_ms(model, args.size, args.batch):13.0f}"
        print(f"{name:10} {count_parameters(model) / 1e6:10.3f} "
              f"{count_macs(model, args.size) / 1e9:12.2f} {timing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
