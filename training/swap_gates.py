"""`python -m sar_cloud_removal.training.swap_gates --config CFG --body A.pt --gate B.pt`:
score on a config's selection scenes a network whose gate is another checkpoint's.

Which part of a gated network declines with training, the gate or the body it gates? Run each
checkpoint's body with the other's gate: the gate module of `--body`'s network is replaced by
one that returns `--gate`'s gate for the same input, so the body's masking, blending and
keep-clear follow the borrowed gate. Training's validation (training.train.validate) scores
the four pairings. Architectures with a `gate` module only (IB-HFN).
"""
import argparse
import copy

from torch import nn


class BorrowedGate(nn.Module):
    """Stands in for a network's gate module: the gate `donor` computes on the current input."""

    def __init__(self, donor: nn.Module):
        super().__init__()
        self.donor, self.inputs = donor, None

    def forward(self, *_features):
        return self.donor(*self.inputs).gate


class WithGateOf(nn.Module):
    """`body` (a network whose `gate` attribute is its gate module) run with `donor`'s gate."""

    def __init__(self, body: nn.Module, donor: nn.Module):
        super().__init__()
        if getattr(body, "gate", None) is None:
            raise ValueError("the body network has no gate module to replace")
        self.borrowed = BorrowedGate(donor)
        body.gate = self.borrowed
        self.body, self.size_multiple = body, body.size_multiple

    def forward(self, s2, s1):
        self.borrowed.inputs = (s2, s1)
        return self.body(s2, s1)


def main(argv=None) -> int:
    from ..core.model_spec import read_checkpoint
    from ..models.export import load_network
    from .train import build_data, load_config, validate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--body", required=True, metavar="A.pt")
    parser.add_argument("--gate", required=True, metavar="B.pt")
    args = parser.parse_args(argv)
    _, selection = build_data(load_config(args.config))

    def network(path):
        """A run's checkpoint as validation scored it: with its weight average when it has one
        (latest.pt keeps it beside the raw weights; best.pt is the average already)."""
        loaded = load_network(path)[0]
        average = read_checkpoint(path).get("ema_state_dict")
        if average:
            loaded.load_state_dict(average)
        return loaded

    # each checkpoint read once; WithGateOf replaces its body's gate, so a swap runs on copies
    networks = {path: network(path) for path in (args.body, args.gate)}
    keys = ("cloud_psnr", "thin_psnr", "thick_psnr", "gate_clear", "gate_thin", "gate_thick")
    print("body gate " + " ".join(keys))
    for body, gate in ((args.body, args.body), (args.gate, args.gate),
                       (args.body, args.gate), (args.gate, args.body)):
        scored = networks[body] if body == gate else \
            WithGateOf(copy.deepcopy(networks[body]), networks[gate])
        means = validate(scored, selection, scored.size_multiple)
        print(f"{body} {gate} " + " ".join(f"{means['model'][k]:.3f}" for k in keys), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
