"""Building blocks shared by the networks.

No normalisation layers anywhere: inference runs tile by tile with small batches, where batch
statistics would differ from training and make tiles disagree at their seams.
"""
import torch
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
