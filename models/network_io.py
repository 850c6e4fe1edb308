"""What goes into and comes out of every network in the registry, so training, export and the
engine need no per-architecture code."""
from typing import NamedTuple, Optional

import torch
from torch import nn

from ..core.model_spec import S1_BANDS, S2_BANDS

S2_CHANNELS = len(S2_BANDS)   # input s2: N×13×H×W, L1C reflectance on [0, 1]
S1_CHANNELS = len(S1_BANDS)   # input s1: N×2×H×W, VV and VH dB scaled to [0, 1]


class NetworkOutput(NamedTuple):
    """One forward pass.

    A NamedTuple rather than a dataclass because torch.onnx tracing and TorchScript handle
    tuples natively.

    restored: N×13×H×W restored S2 on the [0, 1] network scale.
    gate: N×1×H×W in [0, 1], 1 = clear sky (the optical input passes through), 0 = reconstructed
        from SAR. Networks without a gate return ones (see docs/ARCHITECTURE.md).
    kl: scalar KL divergence of the information bottleneck; exactly 0 without one.
    reconstruction: N×13×H×W, what the network would output with the optical path shut (gate 0),
        for the loss that makes it a reconstruction in its own right; None for networks that do
        not blend one in.
    """
    restored: torch.Tensor
    gate: torch.Tensor
    kl: torch.Tensor
    reconstruction: Optional[torch.Tensor] = None


class EngineOutputs(nn.Module):
    """A network as its ONNX graph presents it: (restored, gate), the outputs the engine reads;
    the KL only matters to training."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, s2: torch.Tensor, s1: torch.Tensor):
        output = self.network(s2, s1)
        return output.restored, output.gate
