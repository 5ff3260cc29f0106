"""The app's palette and colour scales, and arrays turned into QImages."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage

ACCENT = QColor("#2563eb")
UNSURE = QColor("#d97706")
HIGHLIGHT = QColor("#f59e0b")
MUTED = QColor("#6b7280")
TRACK = QColor("#e5e7eb")
TEXT = QColor("#111827")

# Colour scales as anchor colours, interpolated into 256-entry tables. Feature maps use a
# perceptually uniform scale (viridis' anchors); signed weights a diverging blue-white-red one.
_SEQUENTIAL = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
_DIVERGING = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"]


def _table(anchors: list[str]) -> np.ndarray:
    rgb = np.array([[QColor(c).red(), QColor(c).green(), QColor(c).blue()] for c in anchors], dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(anchors))
    steps = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(steps, positions, rgb[:, k]).round().astype(np.uint32) for k in range(3)]
    return (0xFF000000 | (channels[0] << 16) | (channels[1] << 8) | channels[2]).astype(np.uint32)


SEQUENTIAL = _table(_SEQUENTIAL)
DIVERGING = _table(_DIVERGING)


def colour_image(values: np.ndarray, table: np.ndarray) -> QImage:
    """A 2-D array of values in [0, 1] as an RGB32 QImage through a colour table."""
    index = np.clip(np.nan_to_num(values) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pixels = np.ascontiguousarray(table[index])
    height, width = pixels.shape
    return QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_RGB32).copy()


def gray_image(values: np.ndarray) -> QImage:
    pixels = np.ascontiguousarray(np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8))
    height, width = pixels.shape
    return QImage(pixels.data, width, height, width, QImage.Format.Format_Grayscale8).copy()
