"""The SAR-guided cloud-removal network with bimodal attention fusion (SG-BAFM) and deep feature
integration (DFIN), seed 003, reimplemented from the paper's text (no public code).

    base      = MBConv(conv(s2 ⊕ s1))    (⊕: concatenation)             full resolution
    optical   = ↓4(s2),   sar = SAR guidance(optical, ↓4(s1))          1/4 resolution
    attention : query, key = tokens(sar), value = tokens(optical)      16-px patch tokens
    directed  = ↑4(MBConv(optical + ↑4(attention)))
    restored  = s2 + conv(DFIN(base, directed))

Base fusion keeps the full-resolution detail of early fusion; directed fusion lets SAR decide
which patches resemble each other (SAR sees through cloud) and moves optical content between
them, which is how cloud-free optical colour reaches cloudy patches. DFIN integrates the two
with an FPN and channel attention. The network predicts a correction added to the cloudy S2.

The paper has no gate. With `mask_head` (the default) a small cloud-detector head on DFIN's
integrated features gives the gate (blocks.MaskHead, trained by the mask term); it does not touch
the restoration. Without it the gate is the documented "no gate" value, ones. KL is zero.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import MaskHead, WindowCrossAttention, conv3x3, no_gate, upsample
from .network_io import S1_CHANNELS, S2_CHANNELS, NetworkOutput

_DOWNSAMPLING = 4   # the directed path works at 1/4 resolution
# patch side in 1/4-resolution pixels: the paper's transformer works on 16×16-pixel patches
_PATCH = 4
_MBCONV_EXPANSION = 4
_SQUEEZE_REDUCTION = 4


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a weight computed from the pooled tile,
    so informative channels are emphasised (DFIN's channel attention and MBConv's SE)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // _SQUEEZE_REDUCTION, 4)
        self.weights = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                     nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1),
                                     nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class MBConv(nn.Module):
    """EfficientNet's inverted residual: 1×1 expansion, 3×3 depthwise, channel attention, 1×1
    projection, plus the input. The depthwise convolution is what makes full-resolution blocks
    affordable. Without batch normalisation, like every block here (see blocks.py)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels * _MBCONV_EXPANSION
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.SiLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.SiLU(inplace=True),
            ChannelAttention(hidden), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def mbconvs(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(MBConv(channels) for _ in range(count)))


class SarGuidance(nn.Module):
    """F_sar ⊙ σ(Conv(Conv(F_opt) + Conv(F_sar))): a per-pixel weight from both modalities that
    keeps the SAR features where they carry structure and damps them where they are speckle."""

    def __init__(self, optical_channels: int, sar_channels: int):
        super().__init__()
        self.optical = nn.Conv2d(optical_channels, sar_channels, 1)
        self.sar = nn.Conv2d(sar_channels, sar_channels, 1)
        self.weight = nn.Conv2d(sar_channels, 1, 1)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return sar * torch.sigmoid(self.weight(F.relu(self.optical(optical) + self.sar(sar))))


class BimodalAttentionFusion(nn.Module):
    """SG-BAFM: SAR guidance, then a transformer block on 16-px patch tokens in which the SAR
    tokens are query and key and the optical tokens the value; the result, brought back to the
    feature grid by a 1×1 convolution and bilinear upsampling, is added to the optical features.
    """

    def __init__(self, optical_channels: int, sar_channels: int, dim: int, heads: int,
                 window: int):
        super().__init__()
        self.guide = SarGuidance(optical_channels, sar_channels)
        self.optical_tokens = nn.Conv2d(optical_channels, dim, _PATCH, stride=_PATCH)
        self.sar_tokens = nn.Conv2d(sar_channels, dim, _PATCH, stride=_PATCH)
        self.attention = WindowCrossAttention(dim, dim, dim, dim, dim=dim, heads=heads,
                                              window=window)
        self.feed_forward = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.GELU(),
                                          nn.Conv2d(2 * dim, dim, 1))
        self.back = nn.Conv2d(dim, optical_channels, 1)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        sar_tokens = self.sar_tokens(self.guide(optical, sar))
        tokens = self.optical_tokens(optical)
        tokens = tokens + self.attention(sar_tokens, sar_tokens, tokens)
        tokens = tokens + self.feed_forward(tokens)
        return optical + upsample(self.back(tokens), _PATCH)


class Pyramid(nn.Module):
    """DFIN's FPN, a two-level U-Net: two stride-2 levels, then top-down additions back to the
    input resolution, so each output pixel mixes detail with 4× wider context."""

    def __init__(self, channels: int):
        super().__init__()
        self.down = nn.ModuleList(conv3x3(channels, channels, stride=2) for _ in range(2))
        self.out = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = F.relu(self.down[0](x))
        quarter = F.relu(self.down[1](half))
        return self.out(x + upsample(half + upsample(quarter)))


class FeatureIntegration(nn.Module):
    """F̂ = Conv(Attention(F) ⊕ Pyramid(F) ⊕ F), ⊕ being concatenation."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = ChannelAttention(channels)
        self.pyramid = Pyramid(channels)
        self.fuse = nn.Conv2d(3 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.attention(x), self.pyramid(x), x], dim=1))


class DFIN(nn.Module):
    """Deep feature integration: MBConv(Max(F̂_base, F̂_directed) ⊕ F_base ⊕ F_directed).

    The paper's "maximum pixel value selection" is read as the element-wise maximum of the two
    integrated feature maps: at each pixel and channel the stronger of the two paths wins.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.base = FeatureIntegration(channels)
        self.directed = FeatureIntegration(channels)
        self.fuse = nn.Conv2d(3 * channels, channels, 1)
        self.refine = MBConv(channels)

    def forward(self, base: torch.Tensor, directed: torch.Tensor) -> torch.Tensor:
        strongest = torch.maximum(self.base(base), self.directed(directed))
        return self.refine(self.fuse(torch.cat([strongest, base, directed], dim=1)))


class SGBAFMNet(nn.Module):
    """The network; see the module docstring for the data flow.

    width: channels of the full-resolution base path and of DFIN.
    directed_width: channels of the 1/4-resolution optical and SAR paths.
    blocks: MBConv blocks in the base path and after the attention fusion.
    attention_dim, heads: width and heads of the patch-token attention.
    window: attention window side in 16-px patches; H and W must be multiples of 16 · window.
    mask_head: predict the gate with a cloud-detector head (see the module docstring).
    """

    def __init__(self, width: int = 16, directed_width: int = 64, blocks: int = 2,
                 attention_dim: int = 128, heads: int = 4, window: int = 8,
                 mask_head: bool = True):
        super().__init__()
        if min(width, directed_width, blocks) < 1:
            raise ValueError("width, directed_width and blocks must be at least 1")
        self.size_multiple = _DOWNSAMPLING * _PATCH * window

        self.base = nn.Sequential(conv3x3(S2_CHANNELS + S1_CHANNELS, width),
                                  nn.ReLU(inplace=True), mbconvs(width, blocks))
        self.optical = self._downsampler(S2_CHANNELS, directed_width)
        self.sar = self._downsampler(S1_CHANNELS, directed_width)
        self.fusion = BimodalAttentionFusion(directed_width, directed_width, attention_dim, heads,
                                             window)
        self.directed_blocks = mbconvs(directed_width, blocks)
        self.directed_out = nn.Conv2d(directed_width, width, 1)
        self.integration = DFIN(width)
        self.reconstruction = conv3x3(width, S2_CHANNELS)
        self.mask = MaskHead(width) if mask_head else None

    @staticmethod
    def _downsampler(in_channels: int, channels: int) -> nn.Sequential:
        """The paper's per-modality extraction: downsampling convolutions and ReLU, to 1/4."""
        return nn.Sequential(conv3x3(in_channels, channels, stride=2), nn.ReLU(inplace=True),
                             conv3x3(channels, channels, stride=2), nn.ReLU(inplace=True))

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> NetworkOutput:
        base = self.base(torch.cat([s2, s1], dim=1))
        directed = self.directed_blocks(self.fusion(self.optical(s2), self.sar(s1)))
        directed = upsample(self.directed_out(directed), _DOWNSAMPLING)
        features = self.integration(base, directed)
        gate = no_gate(s2) if self.mask is None else self.mask(features)
        return NetworkOutput(restored=s2 + self.reconstruction(features), gate=gate,
                             kl=s2.new_zeros(()))
