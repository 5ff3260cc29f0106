"""Receptive fields: where each unit of a layer's output looks in the input. The one
implementation, used by the app (``Predictor.receptive_field``) and the summary table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cnn_lightning.images import MNIST_SIZE


@dataclass(frozen=True)
class Geometry:
    """Where the units of one layer's output look in the 28x28 input, per axis (rows, columns).

    Unit ``i`` of the output has its receptive field centred on input pixel ``start + i * jump``
    and ``size`` pixels wide. ``whole`` marks a global layer (adaptive pooling to 1x1) whose units
    see the whole input.
    """

    jump: tuple[int, int] = (1, 1)
    size: tuple[int, int] = (1, 1)
    start: tuple[float, float] = (0.0, 0.0)
    whole: bool = False

    def field(self, row: int, col: int, extent: int = MNIST_SIZE) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (row, col)'s receptive field, inclusive, clipped."""
        if self.whole:
            return 0, 0, extent - 1, extent - 1
        bounds = []
        for axis, index in ((0, row), (1, col)):
            centre = self.start[axis] + index * self.jump[axis]
            half = (self.size[axis] - 1) / 2
            bounds.append((max(0, math.floor(centre - half)), min(extent - 1, math.ceil(centre + half))))
        (top, bottom), (left, right) = bounds
        return top, left, bottom, right

    def through(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int] = (0, 0),
                dilation: tuple[int, int] = (1, 1)) -> Geometry:
        """The geometry after a sliding window, by the standard recurrence per axis: jump *= stride;
        size += (kernel - 1) * dilation * jump; the first unit's centre moves by
        ((kernel - 1) * dilation / 2 - padding) * jump."""
        jump, size, start = [], [], []
        for a in (0, 1):
            reach = (kernel[a] - 1) * dilation[a]
            start.append(self.start[a] + (reach / 2 - padding[a]) * self.jump[a])
            size.append(self.size[a] + reach * self.jump[a])
            jump.append(self.jump[a] * stride[a])
        return Geometry(tuple(jump), tuple(size), tuple(start))


def pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def sliding_window(module: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride, padding, dilation) of a sliding-window layer, else None."""
    if isinstance(module, nn.Conv2d):
        kernel, dilation = pair(module.kernel_size), pair(module.dilation)
        if isinstance(module.padding, str):  # "valid" or "same" (odd kernels: symmetric)
            padding = (0, 0) if module.padding == "valid" else tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        else:
            padding = pair(module.padding)
        return kernel, pair(module.stride), padding, dilation
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = pair(module.kernel_size)
        stride = pair(module.stride if module.stride else module.kernel_size)
        dilation = pair(getattr(module, "dilation", 1))
        return kernel, stride, pair(module.padding), dilation
    return None


@torch.no_grad()
def receptive_fields(model: nn.Module) -> dict[str, Geometry]:
    """The receptive-field geometry of every module whose output is a 2-D map, by name.

    Traced from one forward pass (so the order is the real forward order), with the standard
    recurrence per layer (``Geometry.through``). Layers that keep the spatial
    size (BatchNorm, activations, 1x1 convs) keep the geometry; a layer that changes the size in
    an unknown way ends the trace.
    """
    calls: list[tuple[str, nn.Module, tuple, tuple]] = []

    def record(name):
        def hook(module, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                calls.append((name, module, tuple(inputs[0].shape), tuple(output.shape)))
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    handles = [m.register_forward_hook(record(n)) for n, m in leaves]
    try:
        model(torch.zeros(1, 1, MNIST_SIZE, MNIST_SIZE))
    finally:
        for handle in handles:
            handle.remove()

    geometry: dict[str, Geometry] = {}
    current: Geometry | None = Geometry()
    for name, module, in_shape, out_shape in calls:
        if current is None or len(out_shape) != 4 or len(in_shape) != 4:
            current = None
            continue
        window = sliding_window(module)
        if window is not None and not current.whole:  # after a global layer, all stay global
            current = current.through(*window)
        elif window is None and isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and out_shape[2:] == (1, 1):
            current = Geometry(whole=True)
        elif window is None and in_shape[2:] != out_shape[2:]:
            current = None  # an unknown resampling: no honest receptive field after it
            continue
        geometry[name] = current
    return geometry
