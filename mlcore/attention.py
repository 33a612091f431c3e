"""CBAM: Convolutional Block Attention Module (Woo, Park, Lee & Kweon, ECCV 2018).

Channel attention (a shared MLP over the average- and max-pooled descriptors, summed, sigmoid)
followed by spatial attention (a k x k convolution over the channel-wise mean and max maps,
sigmoid), each multiplied into the features; the output has the input's shape.

Departures from the paper: the hidden width of the channel MLP is ``max(1, channels // reduction)``
so the module also fits the very narrow layers of DenseNet's dense layers and of the tiny CPU
networks (the paper only used reduction 16 on wide ResNet stages); the MLP is written with 1x1
convolutions, which is the same computation as the paper's fully-connected layers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]


class ChannelAttention(nn.Module):
    """x (N, C, H, W) -> x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), same shape."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights, shape (N, C, 1, 1), in (0, 1)."""
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SpatialAttention(nn.Module):
    """x (N, C, H, W) -> x * sigmoid(conv([mean_c(x), max_c(x)])), same shape."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial weights, shape (N, 1, H, W), in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CBAM(nn.Module):
    """Channel attention then spatial attention (the paper's best ordering); shape-preserving."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channels = channels
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
