"""Building blocks shared by the nets. Plain PyTorch."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


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


def output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Seed 004's output width of a conv or pool: (W - F + 2P) / S + 1, rounded down.

    F is the dilated kernel's extent; a pool with no padding is the (W - F) / S + 1 case.
    """
    extent = dilation * (kernel_size - 1) + 1
    out = (size - extent + 2 * padding) // stride + 1
    if out < 1:
        raise ValueError(f"a {kernel_size}x{kernel_size} window (stride {stride}, padding {padding}) "
                         f"does not fit a {size}x{size} input: (W - F + 2P)/S + 1 = "
                         f"({size} - {extent} + 2*{padding})/{stride} + 1 = {out}")
    return out


def activation(name: str) -> nn.Module:
    """A fresh activation module by name: relu, tanh or sigmoid."""
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None
    return cls(inplace=True) if cls is nn.ReLU else cls()


def pool(kind: str, kernel_size: int = 2, stride: int | None = None) -> nn.Module:
    """A max or average pool by name."""
    try:
        cls = POOLS[kind]
    except KeyError:
        raise ValueError(f"pool must be one of {sorted(POOLS)}, got {kind!r}") from None
    return cls(kernel_size, stride=stride)


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
