"""MMCANet (Zhou et al., TGRS 2025, seed 002): multimodal cross-attention with progressive
restoration, reimplemented from the abstract (the paper is closed and has no public code).

    o_0 … o_D = optical extractor(s2),  s_D = SAR extractor(s1)      level k at 1/2^k
    x_D = ASPP(o_D + cross-attention(query o_D; key, value s_D))      in windows
    x_k = decoder(↑x_(k+1) + o_k)                                     k = D−1 … 0
    r_D = stage_D(x_D, c_D)                                           c_k: s2 pooled to 1/2^k
    r_k = stage_k(x_k, c_k + ↑(r_(k+1) − c_(k+1)))                    restored = r_0

Each restoration stage corrects the image of the coarser stage, upsampled, at its own scale, so
the network removes clouds coarse-to-fine: first the large-scale radiometry, last the detail.
Every stage's output is a residual on the cloudy S2 pooled to that scale, so zero corrections
return the cloudy input exactly.

The paper has no gate. With `mask_head` (the default) a small cloud-detector head on the finest
decoder features gives the gate (blocks.MaskHead, trained by the mask term); it does not touch
the restoration. Without it the gate is the documented "no gate" value, ones. KL is zero.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import MaskHead, WindowCrossAttention, conv3x3, no_gate, res_blocks, upsample
from .ibhfn import Encoder, Upsample
from .network_io import S1_CHANNELS, S2_CHANNELS, NetworkOutput

# Dilations at the deepest level (1/8 by default), where 4 already spans ±32 input pixels. The
# 1×1 branch is dilation 1.
_ASPP_DILATIONS = (1, 2, 4)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel convolutions of growing dilation, so every pixel
    sees its surroundings at several ranges (a small cloud needs little context, a large one much),
    fused by a 1×1 convolution and added to the input.

    DeepLab's image-pooling branch is left out on purpose: the engine runs tile by tile, and a
    whole-tile mean would make the same pixel come out differently in two overlapping tiles.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) if dilation == 1 else
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
            for dilation in _ASPP_DILATIONS)
        self.project = nn.Conv2d(channels * len(_ASPP_DILATIONS), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(torch.cat([F.relu(branch(x)) for branch in self.branches], dim=1))


class RestorationStage(nn.Module):
    """One coarse-to-fine step: a correction of `prior` (the coarser stages' image at this scale)
    predicted from this level's decoder features and the prior itself."""

    def __init__(self, channels: int):
        super().__init__()
        self.correction = nn.Sequential(conv3x3(channels + S2_CHANNELS, channels),
                                        nn.ReLU(inplace=True), conv3x3(channels, S2_CHANNELS))

    def forward(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return prior + self.correction(torch.cat([features, prior], dim=1))


class MMCANet(nn.Module):
    """The network; see the module docstring for the data flow.

    width, sar_width: channels of each extractor at full resolution, doubled at every level.
    depth: residual blocks per level, in the extractors and the decoder.
    downsamplings: stride-2 levels; the cross-attention and ASPP work at the deepest one.
    heads, window: cross-attention heads and window side in deepest-level pixels;
        H and W must be multiples of 2**downsamplings · window.
    mask_head: predict the gate with a cloud-detector head (see the module docstring).
    """

    def __init__(self, width: int = 16, sar_width: int = 8, depth: int = 1,
                 downsamplings: int = 3, heads: int = 4, window: int = 8,
                 mask_head: bool = True):
        super().__init__()
        if min(width, sar_width, downsamplings) < 1 or depth < 0:
            raise ValueError("width, sar_width and downsamplings must be at least 1 and depth "
                             "at least 0")
        widths, sar_widths = ([w * 2 ** level for level in range(downsamplings + 1)]
                              for w in (width, sar_width))
        self.size_multiple = 2 ** downsamplings * window

        self.optical_extractor = Encoder(S2_CHANNELS, widths, depth)
        self.sar_extractor = Encoder(S1_CHANNELS, sar_widths, depth)
        self.cross_attention = WindowCrossAttention(widths[-1], sar_widths[-1], sar_widths[-1],
                                                    widths[-1], dim=widths[-1], heads=heads,
                                                    window=window)
        self.aspp = ASPP(widths[-1])
        self.upsamples = nn.ModuleList(Upsample(w_in, w_out)
                                       for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]))
        self.decoder_blocks = nn.ModuleList(res_blocks(w, depth) for w in widths[-2::-1])
        self.stages = nn.ModuleList(RestorationStage(w) for w in widths[::-1])
        self.mask = MaskHead(widths[0]) if mask_head else None

    def progressive(self, s2: torch.Tensor, s1: torch.Tensor) -> list:
        """The restored image of every stage, coarsest (1/2**downsamplings) first; the last is
        the network's output."""
        return self._decode(s2, s1)[1]

    def _decode(self, s2: torch.Tensor, s1: torch.Tensor) -> tuple:
        """(finest decoder features, the restored image of every stage, coarsest first)."""
        optical = self.optical_extractor(s2)
        sar = self.sar_extractor(s1)[-1]
        deep = optical[-1] + self.cross_attention(optical[-1], sar, sar)
        features = [self.aspp(deep)]
        for up, blocks, skip in zip(self.upsamples, self.decoder_blocks, optical[-2::-1]):
            features.append(blocks(up(features[-1]) + skip))

        cloudy = [s2]                               # the cloudy input at every scale, fine first
        for _ in self.upsamples:
            cloudy.append(F.avg_pool2d(cloudy[-1], 2))
        restored = [self.stages[0](features[0], cloudy[-1])]
        for stage, level_features, base, coarser in zip(self.stages[1:], features[1:],
                                                        cloudy[-2::-1], cloudy[:0:-1]):
            # carry the coarser stage's correction, not its image, so the prior keeps this
            # scale's detail of the cloudy input
            restored.append(stage(level_features, base + upsample(restored[-1] - coarser)))
        return features[-1], restored

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> NetworkOutput:
        finest, restored = self._decode(s2, s1)
        gate = no_gate(s2) if self.mask is None else self.mask(finest)
        return NetworkOutput(restored=restored[-1], gate=gate, kl=s2.new_zeros(()))
