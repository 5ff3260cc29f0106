"""Why a net read a digit as it did: one unit's arithmetic, robustness probes (saliency:
``attribution``).

Functions of a model (``nn.Module`` taking (N, 1, 28, 28) in [0, 1], giving logits) and one
preprocessed image ``x`` of shape (1, 28, 28). No Qt here: ``Predictor`` wraps these for the app.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnn_lightning.images import MNIST_SIZE
from cnn_lightning.nets.layers import Normalize

# Probe kinds and their units; values are pixels (shift: right/down; thickness: per side) or
# degrees (rotate: counter-clockwise on screen).
PROBES = {"shift_x": "px", "shift_y": "px", "rotate": "°", "thickness": "px"}
PROBE_RANGES = {  # what the app sweeps
    "shift_x": np.arange(-6, 6.5, 1.0),
    "shift_y": np.arange(-6, 6.5, 1.0),
    "rotate": np.arange(-45, 46, 5.0),
    "thickness": np.arange(-2, 2.25, 0.25),
}
# Layers after a conv that act on each unit alone: the unit's value can be followed through them.
POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Dropout, nn.Identity)
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)


# --------------------------------------------------------------------------------------------
# One unit's arithmetic


@dataclass(frozen=True)
class Step:
    """A pointwise layer the unit's value went through after the conv (BatchNorm, activation)."""

    layer: str
    kind: str  # the module's class name: BatchNorm2d, ReLU, ...
    value: float  # the layer's output at the unit
    formula: str  # how value follows from the previous one, with the numbers


@dataclass(frozen=True)
class UnitExplanation:
    """How output ``(channel, row, col)`` of conv ``layer`` was computed from the layer's input.

    ``patch`` and ``kernel`` have the shape of one output channel's weights (input channels of
    its group x kh x kw); ``patch`` holds the layer's input under the dilated kernel, zero where
    the kernel lies in the padding (``padded`` marks those taps). ``value`` is what the layer
    computed there: ``(patch * kernel).sum() + bias``. ``steps`` follow it through the pointwise
    layers after the conv, up to and including the activation.
    """

    layer: str
    channel: int
    row: int
    col: int
    patch: np.ndarray  # float64 (C_in/groups, kh, kw)
    kernel: np.ndarray  # float64, same shape
    bias: float
    value: float
    padded: np.ndarray  # bool (kh, kw): the tap lies in the zero padding
    input_channels: tuple[int, ...]  # which channels of the layer's input the patch comes from
    input_rows: tuple[int, ...]  # the input row of each tap (may be outside: padding)
    input_cols: tuple[int, ...]
    steps: tuple[Step, ...] = ()
    field: tuple[int, int, int, int] | None = None  # receptive field in the 28x28 image, inclusive
    input_note: str = ""  # what the layer's input is, when it is not plain feature maps

    @property
    def product(self) -> np.ndarray:
        return self.patch * self.kernel

    @property
    def total(self) -> float:
        """The sum of the element-wise product, before the bias."""
        return float(self.product.sum())

    @property
    def activated(self) -> float | None:
        """The value after the activation, or None when no activation follows the conv directly."""
        for step in self.steps:
            if step.kind in {cls.__name__ for cls in ACTIVATIONS}:
                return step.value
        return None


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding, as PyTorch applies it ("same" may be uneven)."""
    kernel, dilation = _pair(conv.kernel_size), _pair(conv.dilation)
    if conv.padding == "valid":
        return 0, 0, 0, 0
    if conv.padding == "same":
        pads = []
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = _pair(conv.padding)
    return ph, ph, pw, pw


def _leaves_in_forward_order(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, nn.Module]], dict]:
    """Run the model once; return its leaf modules in call order and each one's (input, output)."""
    calls: list[tuple[str, nn.Module]] = []
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name):
        def hook(module, inputs, output):
            # clone: an in-place activation after this layer would overwrite its output
            calls.append((name, module))
            tensors[name] = (inputs[0].detach().clone(), output.detach().clone())
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    handles = [m.register_forward_hook(record(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            model(x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE))
    finally:
        for handle in handles:
            handle.remove()
    return calls, tensors


def conv_layers(model: nn.Module) -> list[str]:
    """The names of the model's 2-D convolutions, in definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def overview_stages(model: nn.Module) -> list[tuple[str, str]]:
    """What an all-layers view shows, in forward order: (layer name, "maps" | "bars").

    A stage is a conv, pool, normalisation or dense layer with the pointwise layers after it
    (BatchNorm, activation, dropout); its last output stands for it (a conv's map after its ReLU).
    Reshapes (Flatten), the input standardisation and the final logits (the probabilities show
    them) are left out; a (C, 1, 1) map is shown as bars.
    """
    calls, tensors = _leaves_in_forward_order(model, torch.zeros(1, MNIST_SIZE, MNIST_SIZE))
    stages: list[tuple[str, str]] = []
    for name, module in calls:
        if isinstance(module, (Normalize, nn.Flatten, nn.Dropout, nn.Identity)):
            continue
        output = tensors[name][1]
        kind = "maps" if output.dim() == 4 and output.shape[2] * output.shape[3] > 1 else "bars"
        if isinstance(module, POINTWISE) and stages:
            stages[-1] = (name, stages[-1][1])  # the stage's latest output stands for it
        else:
            stages.append((name, kind))
    return stages[:-1]  # the last stage is the logits


def conv_feeding(model: nn.Module, layer: str) -> str | None:
    """The conv whose units ``layer`` shows: ``layer`` itself when it is a conv, the conv before it
    when ``layer`` is a pointwise layer (BatchNorm, activation) right after one, else None."""
    modules = dict(model.named_modules())
    if isinstance(modules.get(layer), nn.Conv2d):
        return layer
    calls, _ = _leaves_in_forward_order(model, torch.zeros(1, MNIST_SIZE, MNIST_SIZE))
    names = [name for name, _ in calls]
    if layer not in names:
        return None
    for name, module in reversed(calls[: names.index(layer) + 1]):
        if isinstance(module, nn.Conv2d):
            return name
        if not isinstance(module, POINTWISE):
            return None
    return None


def _step_formula(module: nn.Module, channel: int, before: float, after: float) -> str:
    if isinstance(module, nn.BatchNorm2d):
        mean = float(module.running_mean[channel]) if module.running_mean is not None else 0.0
        var = float(module.running_var[channel]) if module.running_var is not None else 1.0
        gamma = float(module.weight[channel].detach()) if module.weight is not None else 1.0
        beta = float(module.bias[channel].detach()) if module.bias is not None else 0.0
        return (f"({before:.4f} − {mean:.4f}) / √({var:.4f} + {module.eps:g}) × {gamma:.4f} + {beta:.4f}"
                f" = {after:.4f}")
    if isinstance(module, nn.ReLU):
        return f"max(0, {before:.4f}) = {after:.4f}"
    if isinstance(module, nn.Sigmoid):
        return f"1 / (1 + e^−({before:.4f})) = {after:.4f}"
    if isinstance(module, nn.Tanh):
        return f"tanh({before:.4f}) = {after:.4f}"
    if isinstance(module, (nn.Dropout, nn.Identity)):
        return f"{after:.4f} (unchanged at inference)"
    return f"{type(module).__name__}({before:.4f}) = {after:.4f}"


def explain_unit(model: nn.Module, x: torch.Tensor, layer: str, channel: int, row: int, col: int,
                 field: tuple[int, int, int, int] | None = None) -> UnitExplanation:
    """The arithmetic behind one output unit of conv ``layer`` (a name from ``named_modules()``;
    a pointwise layer right after a conv stands for that conv). Raises ValueError for a layer that
    is not a conv and IndexError for a unit outside the layer's output."""
    target = conv_feeding(model, layer)
    if target is None:
        raise ValueError(f"{layer!r} is not a convolution of this net (its convs: {', '.join(conv_layers(model))})")
    conv: nn.Conv2d = dict(model.named_modules())[target]
    calls, tensors = _leaves_in_forward_order(model, x)
    layer_input, output = tensors[target]
    _, channels, height, width = output.shape
    if not (0 <= channel < channels and 0 <= row < height and 0 <= col < width):
        raise IndexError(f"unit ({channel}, {row}, {col}) is outside {target}'s output {channels}x{height}x{width}")

    (kh, kw), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    top, _, left, _ = _conv_padding(conv)
    per_group_out = conv.out_channels // conv.groups
    per_group_in = conv.in_channels // conv.groups
    group = channel // per_group_out
    in_channels = tuple(range(group * per_group_in, (group + 1) * per_group_in))
    rows = tuple(row * sh - top + i * dh for i in range(kh))
    cols = tuple(col * sw - left + j * dw for j in range(kw))
    in_h, in_w = layer_input.shape[2:]
    padded = np.array([[not (0 <= r < in_h and 0 <= c < in_w) for c in cols] for r in rows])
    source = layer_input[0, list(in_channels)].double().numpy()
    patch = np.zeros((per_group_in, kh, kw))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if not padded[i, j]:
                patch[:, i, j] = source[:, r, c]
    if conv.padding_mode != "zeros":  # reflect/replicate/circular: the taps read real pixels
        raise ValueError(f"{target}: padding mode {conv.padding_mode!r} is not explained, only zero padding")

    kernel = conv.weight[channel].detach().double().numpy()
    bias = float(conv.bias[channel].detach()) if conv.bias is not None else 0.0
    value = float(output[0, channel, row, col])

    steps = []
    names = [name for name, _ in calls]
    before = calls[names.index(target) - 1][1] if names.index(target) > 0 else None
    note = (f"the standardised image: (pixel − {float(before.mean):.4f}) / {float(before.std):.4f}"
            if isinstance(before, Normalize) else "")
    previous = value
    for name, module in calls[names.index(target) + 1:]:
        if not isinstance(module, POINTWISE):
            break
        after = float(tensors[name][1][0, channel, row, col])
        steps.append(Step(name, type(module).__name__, after, _step_formula(module, channel, previous, after)))
        previous = after
        if isinstance(module, ACTIVATIONS):
            break
    return UnitExplanation(
        layer=target, channel=channel, row=row, col=col, patch=patch, kernel=kernel, bias=bias,
        value=value, padded=padded, input_channels=in_channels, input_rows=rows, input_cols=cols,
        steps=tuple(steps), field=field, input_note=note,
    )


def _probabilities(model: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.softmax(model(chunk).double(), dim=1) for chunk in images.split(batch)])


# --------------------------------------------------------------------------------------------
# Robustness probes


def _affine(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta[None], list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _morphology(image: torch.Tensor, steps: int) -> torch.Tensor:
    """Grayscale dilation (steps > 0) or erosion (< 0) with a 3x3 square, |steps| times: each
    step grows or shrinks a stroke by a pixel on every side."""
    for _ in range(abs(steps)):
        if steps > 0:
            image = F.max_pool2d(image, 3, stride=1, padding=1)
        else:
            image = -F.max_pool2d(-image, 3, stride=1, padding=1)
    return image


def transform(x: torch.Tensor, kind: str, value: float) -> torch.Tensor:
    """``x`` (1, 28, 28) shifted, rotated or thickened by ``value`` (see ``PROBES``); the same
    tensor when ``value`` is 0. Sub-pixel shifts and all rotations resample bilinearly; a
    fractional thickness blends the two whole-pixel morphologies around it."""
    if kind not in PROBES:
        raise ValueError(f"probe kind must be one of {', '.join(PROBES)}, got {kind!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"probe value must be finite, got {value}")
    if value == 0:
        return x
    image = x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE).float()
    pixel = 2.0 / MNIST_SIZE  # one pixel in affine_grid's [-1, 1] coordinates
    if kind == "shift_x":
        theta = torch.tensor([[1.0, 0.0, -value * pixel], [0.0, 1.0, 0.0]])
        out = _affine(image, theta)
    elif kind == "shift_y":
        theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -value * pixel]])
        out = _affine(image, theta)
    elif kind == "rotate":
        # the grid maps output to input; y points down, so this turns the digit counter-clockwise
        a = math.radians(value)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
        out = _affine(image, theta)
    else:
        low = math.floor(value)
        weight = value - low
        out = _morphology(image, low)
        if weight > 0:
            out = (1 - weight) * out + weight * _morphology(image, low + 1)
    return out.reshape(1, MNIST_SIZE, MNIST_SIZE).clamp(0.0, 1.0)


def probe(model: nn.Module, x: torch.Tensor, kind: str, values) -> np.ndarray:
    """The ten class probabilities (float64, (len(values), 10)) of ``x`` transformed by each value."""
    values = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if not values:
        return np.zeros((0, 10))
    images = torch.stack([transform(x, kind, v).reshape(1, MNIST_SIZE, MNIST_SIZE) for v in values])
    return _probabilities(model, images).numpy()


def flip_points(values, probabilities: np.ndarray) -> tuple[float | None, float | None]:
    """The values nearest to 0, below and above, at which the predicted class first differs from
    the class at 0 (None on a side where it never flips). ``values`` must include 0."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(probabilities).argmax(axis=1)
    zero = int(np.argmin(np.abs(values)))
    if values[zero] != 0:
        raise ValueError("the probe values must include 0")
    order = np.argsort(values)
    position = int(np.flatnonzero(order == zero)[0])
    below = next((values[i] for i in order[:position][::-1] if labels[i] != labels[zero]), None)
    above = next((values[i] for i in order[position + 1:] if labels[i] != labels[zero]), None)
    return (None if below is None else float(below)), (None if above is None else float(above))
