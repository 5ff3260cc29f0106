"""Using a trained net on images: MNIST-style preprocessing, prediction, feature maps, receptive
fields, image files and the best checkpoint of each architecture. No Qt here: the app's widgets
(``gui/``) and scripts both build on this module.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from cnn_lightning.checkpoints import RunRecord, find_runs, load_model

MNIST_SIZE = 28
FIT_BOX = 20  # MNIST digits were scaled to fit 20x20, then placed in 28x28
# Where MNIST puts a digit's centre of mass, in pixel indices: the test set's mean is
# (13.99, 14.01) with a spread of 0.29, i.e. integer shifts towards (14, 14).
CENTRE_OF_MASS = 14.0
INK_THRESHOLD = 0.1  # fraction of full intensity that counts as ink for the bounding box
UNSURE_BELOW = 0.6  # a top probability under this is shown as "not sure"
MAX_IMAGE_BYTES = 50_000_000
MAX_IMAGE_PIXELS = 40_000_000
# Architectures in the order the app lists them; any other name found is listed after these.
ARCHITECTURE_ORDER = ("lenet", "lenet_classic", "alexnet_lite", "tiny")

# The layers whose outputs are shown as feature maps: convolutions, activations, pools.
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)
FEATURE_LAYERS = (
    nn.Conv2d, *ACTIVATIONS,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.LocalResponseNorm,
)


class EmptyImageError(ValueError):
    """The image has no ink: there is no digit to recognise."""


class ImageFileError(ValueError):
    """An image file that cannot be used (missing, unreadable, truncated, too large)."""


# --------------------------------------------------------------------------------------------
# Preprocessing


def to_unit_float(image) -> np.ndarray:
    """A 2-D grayscale image as float32 in [0, 1].

    Integer images are divided by their type's maximum (uint8: 255). Float images are taken to be
    in [0, 1], unless their maximum exceeds 1: then they are read as 0..255.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    elif np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if array.size and array.max() > 1.0:
            array = array / 255.0
    else:
        raise TypeError(f"expected a numeric image, got dtype {array.dtype}")
    return np.clip(array, 0.0, 1.0)


def ink_bounding_box(image: np.ndarray, threshold: float = INK_THRESHOLD) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), exclusive bottom/right, of the pixels brighter than ``threshold``."""
    mask = image > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise EmptyImageError("the image has no ink: draw a digit")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre, in pixel indices."""
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    if total <= 0:
        raise EmptyImageError("the image has no ink: draw a digit")
    rows = (image.sum(axis=1) * np.arange(image.shape[0])).sum() / total
    cols = (image.sum(axis=0) * np.arange(image.shape[1])).sum() / total
    return float(rows), float(cols)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample float32 ``image`` to ``size`` (rows, columns), anti-aliased.

    Shrinking averages the source area under each output pixel (a box filter, as a scanner's
    sensor integrates), which keeps strokes' mass and sharpness; enlarging is bilinear.
    """
    shrinking = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(image.astype(np.float32)).resize((size[1], size[0]), resample)  # mode "F"
    return np.asarray(resized, dtype=np.float32)


def preprocess(image, threshold: float = INK_THRESHOLD) -> torch.Tensor:
    """The procedure MNIST was made with, on any 2-D grayscale image (ink bright on dark).

    Crop to the ink's bounding box, scale (anti-aliased) so that the longer side is 20 pixels
    keeping the aspect ratio, and paste into a 28x28 field so that the centre of mass lands on
    pixel (14, 14) as in MNIST (an integer shift, as MNIST used; clamped so that no ink leaves
    the field). Returns float32 (1, 28, 28) in [0, 1]. Raises ``EmptyImageError`` when no pixel
    is brighter than ``threshold``.
    """
    array = to_unit_float(image)
    top, left, bottom, right = ink_bounding_box(array, threshold)
    crop = np.ascontiguousarray(array[top:bottom, left:right])
    height, width = crop.shape
    scale = FIT_BOX / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    fitted = np.clip(_resize(crop, size), 0.0, 1.0)
    row, col = centre_of_mass(fitted)
    top = min(max(round(CENTRE_OF_MASS - row), 0), MNIST_SIZE - size[0])
    left = min(max(round(CENTRE_OF_MASS - col), 0), MNIST_SIZE - size[1])
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    out[top : top + size[0], left : left + size[1]] = fitted
    return torch.from_numpy(out)[None]


# --------------------------------------------------------------------------------------------
# Image files


def load_image_file(
    path: str | os.PathLike, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """An image file as a float32 2-D array in [0, 1], ink bright on a dark background.

    Any format Pillow reads; colour becomes luminance; transparency is laid on the background that
    contrasts with the ink; a light background (judged by the median of the border pixels) is
    inverted, so a scan of dark ink on paper works like a drawing. The background level is then
    subtracted and the contrast stretched to full scale. Raises ``ImageFileError`` with the reason
    for a missing, unreadable, truncated or too large file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageFileError(f"{path}: cannot read it ({err.strerror or err})") from err
    if not path.is_file():
        raise ImageFileError(f"{path}: not a file")
    if size > max_bytes:
        raise ImageFileError(f"{path}: {size / 1e6:.0f} MB is too large for a digit (limit {max_bytes / 1e6:.0f} MB)")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:  # checked from the header, before decoding
                raise ImageFileError(
                    f"{path}: {width}x{height} pixels is too large for a digit (limit {max_pixels / 1e6:.0f} megapixels)"
                )
            img.load()  # decodes now: a truncated or corrupt file fails here
            img = ImageOps.exif_transpose(img)
            gray = _luminance(img)
    except ImageFileError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"{path}: not an image Pillow can read ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's "truncated"/"broken" errors
        raise ImageFileError(f"{path}: unreadable or truncated image ({err})") from err
    if gray.size == 0:
        raise ImageFileError(f"{path}: the image is empty (0 pixels)")
    return _ink_on_dark(gray)


def _luminance(img) -> np.ndarray:
    """Grayscale float32 in [0, 1] from any Pillow mode."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit: scale by the range used
        array = np.asarray(img, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        return (array - low) / (high - low) if high > low else np.zeros_like(array)
    if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        lum, alpha = la[..., 0], la[..., 1]
        opaque = alpha > 0.5
        light_ink = bool(opaque.any()) and float(lum[opaque].mean()) > 0.5
        background = 0.0 if light_ink else 1.0
        return lum * alpha + background * (1.0 - alpha)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def _ink_on_dark(gray: np.ndarray) -> np.ndarray:
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:
        gray, background = 1.0 - gray, 1.0 - background
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    return (ink / peak).astype(np.float32) if peak > 0 else np.zeros_like(gray, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Feature maps and receptive fields


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``images``; return (logits, {layer name: output (N, C, H, W)}).

    Names are the modules' qualified names (e.g. ``net.features.conv1.relu``), in forward order.
    Outputs are copied as they are produced, so an in-place layer after them cannot alter them.
    """
    maps: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            if output.dim() == 4:
                maps[name] = output.detach().clone()
        return hook

    handles = [
        module.register_forward_hook(keep(name))
        for name, module in model.named_modules()
        if isinstance(module, FEATURE_LAYERS)
    ]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps


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


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _window(module: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride, padding, dilation) of a sliding-window layer, else None."""
    if isinstance(module, nn.Conv2d):
        kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
        if isinstance(module.padding, str):  # "valid" or "same" (odd kernels: symmetric)
            padding = (0, 0) if module.padding == "valid" else tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        else:
            padding = _pair(module.padding)
        return kernel, _pair(module.stride), padding, dilation
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride else module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        return kernel, stride, _pair(module.padding), dilation
    return None


@torch.no_grad()
def receptive_fields(model: nn.Module) -> dict[str, Geometry]:
    """The receptive-field geometry of every module whose output is a 2-D map, by name.

    Traced from one forward pass (so the order is the real forward order), with the standard
    recurrence per layer: jump *= stride; size += (kernel - 1) * dilation * jump; the first unit's
    centre moves by ((kernel - 1) * dilation / 2 - padding) * jump. Layers that keep the spatial
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
        window = _window(module)
        if window is not None and not current.whole:  # after a global layer, all stay global
            kernel, stride, padding, dilation = window
            jump, size, start = [], [], []
            for a in (0, 1):
                reach = (kernel[a] - 1) * dilation[a]
                start.append(current.start[a] + (reach / 2 - padding[a]) * current.jump[a])
                size.append(current.size[a] + reach * current.jump[a])
                jump.append(current.jump[a] * stride[a])
            current = Geometry(tuple(jump), tuple(size), tuple(start))
        elif window is None and isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and out_shape[2:] == (1, 1):
            current = Geometry(whole=True)
        elif window is None and in_shape[2:] != out_shape[2:]:
            current = None  # an unknown resampling: no honest receptive field after it
            continue
        geometry[name] = current
    return geometry


# --------------------------------------------------------------------------------------------
# Prediction


@dataclass(frozen=True)
class Prediction:
    """One image through one net."""

    probabilities: np.ndarray  # (10,), sums to 1
    input: np.ndarray  # (28, 28) float32 in [0, 1]: what the net saw
    maps: dict[str, np.ndarray] = field(repr=False)  # layer name -> (C, H, W) float32
    model_ms: float = 0.0  # forward pass with feature capture

    @property
    def label(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())

    @property
    def uncertain(self) -> bool:
        return self.confidence < UNSURE_BELOW


class Predictor:
    """A loaded net with what the app shows about it; ``predict`` is safe to call from any thread."""

    def __init__(self, model: nn.Module, name: str = "", checkpoint: Path | None = None,
                 record: RunRecord | None = None):
        self.model = model.eval()
        self.name = name or type(getattr(model, "net", model)).__name__
        self.checkpoint = checkpoint
        self.record = record
        self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.geometry = receptive_fields(model)
        _, maps = feature_maps(model, torch.zeros(1, 1, MNIST_SIZE, MNIST_SIZE))
        self.layers = list(maps)  # feature-map layer names, in forward order
        modules = dict(model.named_modules())
        self.activations = [name for name in self.layers if isinstance(modules[name], ACTIVATIONS)]
        self.shapes = {name: tuple(m.shape[1:]) for name, m in maps.items()}
        # forward hooks are per module: two threads running the same net would see each other's
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str = "", record: RunRecord | None = None) -> Predictor:
        """Raises ``CheckpointError`` (a ValueError) naming the file and what is wrong with it."""
        path = Path(path)
        return cls(load_model(path), name=name, checkpoint=path, record=record)

    @property
    def architecture(self) -> str:
        return type(getattr(self.model, "net", self.model)).__name__

    def predict(self, image) -> Prediction:
        """Preprocess any 2-D image (see ``preprocess``) and predict; ``EmptyImageError`` if blank."""
        return self.predict_input(preprocess(image))

    def predict_input(self, x: torch.Tensor) -> Prediction:
        """Predict an already preprocessed (1, 28, 28) image."""
        with self._lock:
            started = time.perf_counter()
            logits, maps = feature_maps(self.model, x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE))
            probabilities = torch.softmax(logits[0].double(), dim=0)
            elapsed = (time.perf_counter() - started) * 1000
        return Prediction(
            probabilities=probabilities.numpy(),
            input=x.reshape(MNIST_SIZE, MNIST_SIZE).numpy(),
            maps={name: m[0].numpy() for name, m in maps.items()},
            model_ms=elapsed,
        )

    def receptive_field(self, layer: str, row: int, col: int) -> tuple[int, int, int, int] | None:
        """The input pixels (top, left, bottom, right; inclusive) that unit (row, col) of ``layer``
        depends on, or None when unknown."""
        geometry = self.geometry.get(layer)
        return geometry.field(row, col) if geometry is not None else None

    def first_conv_kernels(self) -> tuple[str, np.ndarray] | None:
        """(layer name, weights (out channels, k, k)) of the first convolution on the input."""
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Conv2d):
                weights = module.weight.detach().float()
                return name, weights.mean(dim=1).numpy()  # one input channel: the mean is that channel
        return None


# --------------------------------------------------------------------------------------------
# Checkpoints the app offers


def architecture_sort_key(name: str) -> tuple[int, str]:
    return (ARCHITECTURE_ORDER.index(name) if name in ARCHITECTURE_ORDER else len(ARCHITECTURE_ORDER), name)


def best_per_architecture(outputs_root: str | os.PathLike) -> list[RunRecord]:
    """The best run (by validation accuracy) of every architecture found under ``outputs_root``."""
    best: dict[str, RunRecord] = {}
    for record in find_runs(outputs_root):  # best first
        best.setdefault(record.model, record)
    return sorted(best.values(), key=lambda r: architecture_sort_key(r.model))


def record_for_checkpoint(path: str | os.PathLike) -> RunRecord | None:
    """The run a checkpoint file belongs to, when it sits in a run directory with a summary."""
    path = Path(path).resolve()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not (run_dir / "summary.json").is_file():
        return None
    for record in find_runs(run_dir):
        if record.run_dir == run_dir:
            return record
    return None


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The 1-based epoch of a checkpoint named like Lightning's ``epoch03-...`` (0-based there)."""
    match = re.search(r"epoch=?(\d+)", Path(path).name)
    return int(match.group(1)) + 1 if match else None
