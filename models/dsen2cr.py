"""DSen2-CR (Meraner et al., ISPRS 2020), the classic SAR-optical cloud-removal baseline.

Early fusion: S1 and S2 are concatenated at the input, a stack of residual blocks with residual
scaling predicts a correction, and a long skip adds it to the cloudy S2. Reimplemented from the
paper's description (the reference code is GPL-3.0). The published network has width 256 and 16
blocks (18.95 M parameters, ~1.2 TMAC per 256² patch); the defaults here are a small version that
trains on a CPU, and the published size is `width=256, blocks=16`.

The paper has no gate. With `mask_head` (the default) a small cloud-detector head on the last
residual block's features gives the gate (blocks.MaskHead, trained by the mask term); it does not
touch the restoration. Without it the gate is the documented "no gate" value, ones. KL is zero.
"""
import torch
from torch import nn

from .blocks import MaskHead, conv3x3, no_gate, res_blocks
from .network_io import S1_CHANNELS, S2_CHANNELS, NetworkOutput


class DSen2CR(nn.Module):
    size_multiple = 1   # fully convolutional at full resolution: any H, W

    def __init__(self, width: int = 32, blocks: int = 4, residual_scale: float = 0.1,
                 mask_head: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(S2_CHANNELS + S1_CHANNELS, width), nn.ReLU(inplace=True),
            res_blocks(width, blocks, residual_scale))
        self.correction = conv3x3(width, S2_CHANNELS)
        self.mask = MaskHead(width) if mask_head else None

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> NetworkOutput:
        features = self.body(torch.cat([s2, s1], dim=1))
        gate = no_gate(s2) if self.mask is None else self.mask(features)
        return NetworkOutput(restored=s2 + self.correction(features), gate=gate,
                             kl=s2.new_zeros(()))
