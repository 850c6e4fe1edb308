"""Building blocks shared by the networks.

No normalisation layers anywhere: inference runs tile by tile with small batches, where batch
statistics would differ from training and make tiles disagree at their seams.
"""
import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 'same' 3×3 convolution (halves H and W exactly when stride is 2 and H, W are even)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """x + scale · conv(relu(conv(x))).

    A residual scale below 1 (0.1 in DSen2-CR and EDSR) keeps deep norm-free stacks stable
    early in training.
    """

    def __init__(self, channels: int, residual_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True),
                                  conv3x3(channels, channels))
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.body(x)


def res_blocks(channels: int, count: int, residual_scale: float = 1.0) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels, residual_scale) for _ in range(count)))


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Bilinear ×factor: smooth, and exported to ONNX as a Resize that keeps H and W free."""
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


class WindowCrossAttention(nn.Module):
    """Multi-head attention inside non-overlapping window×window windows, with queries, keys and
    values each projected from their own feature map, so one block serves both directions of
    cross-modal guidance (MMCANet: optical asks, SAR answers; SG-BAFM: SAR decides where to look,
    optical supplies what is found there).

    Windows keep memory linear in the tile area: global attention over the 1/4-resolution grid
    of a 1024² tile would need a 65536² matrix per head. H and W must be multiples of `window`.
    The window reshapes are computed from the input's own sizes, so an ONNX trace keeps H and W
    free. No positional encoding: the projected features come from convolutions and already
    know their neighbourhood.
    """

    def __init__(self, query_channels: int, key_channels: int, value_channels: int,
                 out_channels: int, dim: int, heads: int, window: int):
        super().__init__()
        if dim % heads or min(heads, window) < 1:
            raise ValueError("the attention width must be a multiple of the number of heads, and "
                             "heads and window must be at least 1")
        self.query = nn.Conv2d(query_channels, dim, 1)
        self.key = nn.Conv2d(key_channels, dim, 1)
        self.value = nn.Conv2d(value_channels, dim, 1)
        self.out = nn.Conv2d(dim, out_channels, 1)
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """N×C×H×W → (N·windows)×heads×window²×(C/heads)."""
        n, c, h, w = x.shape
        s = self.window
        x = x.reshape(n, self.heads, c // self.heads, h // s, s, w // s, s)
        return x.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, self.heads, s * s, c // self.heads)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        n, _, h, w = query.shape
        s = self.window
        q, k, v = self._windows(self.query(query)), self._windows(self.key(key)), \
            self._windows(self.value(value))
        attended = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1) @ v
        attended = attended.reshape(n, h // s, w // s, self.heads, s, s, -1)
        return self.out(attended.permute(0, 3, 6, 1, 4, 2, 5).reshape(n, -1, h, w))


# A new mask head starts mostly open (sigmoid(2) ≈ 0.88), like IB-HFN's gate: before it has
# learned anything, the engine's keep-clear then blends rather than keeps (below 0.9).
_MASK_HEAD_INIT_LOGIT = 2.0
_MASK_HEAD_HIDDEN = 16


class MaskHead(nn.Module):
    """A clear-sky probability map (N×1×H×W, 1 = clear) predicted from full-resolution features,
    for networks whose design has no gate of their own (DSen2-CR, MMCANet, SG-BAFM).

    The engine needs a gate to keep clear pixels and to show the user its confidence; a network
    that only predicts a corrected image has none. This head is the honest substitute: a cloud
    detector trained by the joint loss's mask term against the same cloud masks as IB-HFN's gate.
    It does not enter the restored image, so the network's restoration is the paper's.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, _MASK_HEAD_HIDDEN), nn.ReLU(inplace=True),
                                  nn.Conv2d(_MASK_HEAD_HIDDEN, 1, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.constant_(self.body[-1].bias, _MASK_HEAD_INIT_LOGIT)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(features))


def no_gate(s2: torch.Tensor) -> torch.Tensor:
    """The documented "no gate" value: ones (every pixel clear, nothing is kept or flagged)."""
    return torch.ones_like(s2[:, :1])
