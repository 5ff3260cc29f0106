"""Building blocks shared by the nets. Plain PyTorch."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Normalize(nn.Module):
    """Standardise [0, 1] images with the MNIST training mean and std.

    Kept inside the model so that a loaded checkpoint takes plain [0, 1] images.
    """

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 0, dropout: float = 0.0
) -> nn.Sequential:
    """Conv (no bias: BatchNorm has one), BatchNorm, ReLU, then optional dropout."""
    layers = {
        "conv": nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
        "bn": nn.BatchNorm2d(out_channels),
        "relu": nn.ReLU(inplace=True),
    }
    if dropout > 0:
        layers["drop"] = nn.Dropout(dropout)
    return nn.Sequential(OrderedDict(layers))
