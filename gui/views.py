"""Read-only views: the 28x28 model input, probability bars, feature-map grids and their legend."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

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


class InputView(QWidget):
    """The 28x28 image the net sees, pixel for pixel, with an optional receptive-field box."""

    def __init__(self, scale: int = 8, parent: QWidget | None = None):
        super().__init__(parent)
        self._scale = scale
        self._image: QImage | None = None
        self._array: np.ndarray | None = None
        self._highlight: tuple[int, int, int, int] | None = None
        self.setFixedSize(28 * scale, 28 * scale)
        self.setToolTip("The 28x28 image the model sees: cropped, fitted to 20x20, centred by mass")

    def set_image(self, array: np.ndarray | None) -> None:
        self._array = None if array is None else np.asarray(array)
        self._image = None if array is None else self._compose(self._array)
        self.update()

    def array(self) -> np.ndarray | None:
        return self._array

    def set_highlight(self, box: tuple[int, int, int, int] | None) -> None:
        """(top, left, bottom, right) input pixels, inclusive; None removes it."""
        if box != self._highlight:
            self._highlight = box
            self.update()

    @property
    def highlight(self) -> tuple[int, int, int, int] | None:
        return self._highlight

    def _compose(self, array: np.ndarray | None) -> QImage:
        """The input enlarged, one block per pixel, with a faint grid between pixels. Built in
        numpy once per input: hovering repaints often, and blended lines drawn one by one cost
        milliseconds."""
        s = self._scale
        values = np.zeros((28, 28)) if array is None else np.clip(array * 255.0 + 0.5, 0, 255)
        big = np.repeat(np.repeat(values.astype(np.uint16), s, axis=0), s, axis=1)
        lines = np.zeros(28 * s, dtype=bool)
        lines[s::s] = True
        grid = lines[:, None] | lines[None, :]
        big[grid] = (big[grid] * (255 - 18) + 255 * 18) // 255  # white at 7% over each pixel
        # RGB32, the screen's format: painting it is a plain copy, with no conversion each time
        image = gray_image(big.astype(np.float32) / 255.0).convertToFormat(QImage.Format.Format_RGB32)
        if array is None:
            painter = QPainter(image)
            painter.setPen(QColor(120, 120, 120))
            painter.drawText(QRectF(image.rect()), Qt.AlignmentFlag.AlignCenter, "28 × 28 input")
            painter.end()
        return image

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        if self._image is None:
            self._image = self._compose(None)
        painter.drawImage(0, 0, self._image)
        s = self._scale
        if self._highlight is not None:
            top, left, bottom, right = self._highlight
            box = QRectF(left * s, top * s, (right - left + 1) * s, (bottom - top + 1) * s)
            fill = QColor(HIGHLIGHT)
            fill.setAlpha(70)
            painter.fillRect(box, fill)
            painter.setPen(QPen(HIGHLIGHT, 2))
            painter.drawRect(box.adjusted(1, 1, -1, -1))
        painter.end()


class ProbabilityBars(QWidget):
    """Ten horizontal bars, one per digit; the top class is coloured (amber when unsure)."""

    def __init__(self, compact: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self._compact = compact
        self._probabilities: np.ndarray | None = None
        self._uncertain = False
        self._row = 13 if compact else 22
        self.setMinimumHeight(10 * self._row)
        self.setMinimumWidth(110 if compact else 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(140 if self._compact else 260, 10 * self._row)

    def set_probabilities(self, probabilities: np.ndarray | None, uncertain: bool = False) -> None:
        self._probabilities = None if probabilities is None else np.asarray(probabilities, dtype=float)
        self._uncertain = uncertain
        self.update()

    def probabilities(self) -> np.ndarray | None:
        return self._probabilities

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * (0.8 if self._compact else 1.0))
        painter.setFont(font)
        probs = self._probabilities
        top = int(probs.argmax()) if probs is not None else -1
        label_w = 16 if self._compact else 22
        value_w = 0 if self._compact else 56
        bar_x = label_w + 4
        bar_w = max(10, self.width() - bar_x - value_w - 4)
        row = self._row
        for digit in range(10):
            y = digit * row
            bar_h = row - (4 if self._compact else 8)
            bar_y = y + (row - bar_h) / 2
            font.setBold(digit == top)
            painter.setFont(font)
            painter.setPen(TEXT if digit == top else MUTED)
            painter.drawText(QRectF(0, y, label_w, row), Qt.AlignmentFlag.AlignCenter, str(digit))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(TRACK)
            painter.drawRoundedRect(QRectF(bar_x, bar_y, bar_w, bar_h), 3, 3)
            if probs is None:
                continue
            p = float(probs[digit])
            colour = (UNSURE if self._uncertain else ACCENT) if digit == top else QColor("#93a3b8")
            painter.setBrush(colour)
            if p > 0.002:
                painter.drawRoundedRect(QRectF(bar_x, bar_y, max(bar_h / 2, bar_w * p), bar_h), 3, 3)
            if value_w:
                painter.setPen(TEXT if digit == top else MUTED)
                painter.drawText(QRectF(bar_x + bar_w + 4, y, value_w, row),
                                 Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{p:.1%}")
        painter.end()


class FeatureMapGrid(QWidget):
    """A stack of 2-D maps (C, H, W) laid out as a grid of colour images.

    ``per_map`` scales each map to its own min..max (weak maps stay visible); otherwise one scale
    spans the layer (maps compare by strength). ``diverging`` centres the scale on zero, for
    signed weights. Hovering a unit emits ``hovered(map, row, col)``.
    """

    hovered = Signal(int, int, int)
    unhovered = Signal()

    GAP = 4

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._maps: np.ndarray | None = None
        self._images: list[QImage] = []
        self._ranges: list[tuple[float, float]] = []
        self._per_map = True
        self._diverging = False
        self._placeholder = "Feature maps appear here"
        self._hover: tuple[int, int, int] | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(240, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_maps(self, maps: np.ndarray | None, per_map: bool = True, diverging: bool = False) -> None:
        self._maps = None if maps is None else np.asarray(maps, dtype=np.float32)
        self._per_map, self._diverging = per_map, diverging
        self._render()
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    @property
    def count(self) -> int:
        return 0 if self._maps is None else self._maps.shape[0]

    @property
    def map_shape(self) -> tuple[int, int] | None:
        return None if self._maps is None else tuple(self._maps.shape[1:])

    def value_range(self, index: int | None = None) -> tuple[float, float] | None:
        """The values the ends of the colour scale stand for: of map ``index``, or of the layer."""
        if self._maps is None:
            return None
        if index is not None and self._per_map:
            return self._ranges[index]
        if self._diverging:
            bound = float(np.abs(self._maps).max())
            return -bound, bound
        return float(self._maps.min()), float(self._maps.max())

    def _render(self) -> None:
        self._images, self._ranges = [], []
        if self._maps is None:
            return
        table = DIVERGING if self._diverging else SEQUENTIAL
        layer = self.value_range()
        for m in self._maps:
            if self._diverging:
                bound = float(np.abs(m).max()) if self._per_map else layer[1]
                low, high = -bound, bound
            else:
                low, high = (float(m.min()), float(m.max())) if self._per_map else layer
            self._ranges.append((low, high))
            span = high - low
            # A constant map has no contrast to show; it is drawn at the scale's low end.
            scaled = (m - low) / span if span > 1e-12 else np.zeros_like(m)
            self._images.append(colour_image(scaled, table))

    def _layout(self) -> tuple[int, float, float, float]:
        """(columns, cell size, x origin, y origin) that make the cells as large as possible."""
        count = self.count
        height, width = self.map_shape
        best = (1, 0.0)
        for cols in range(1, count + 1):
            rows = math.ceil(count / cols)
            cell_w = (self.width() - self.GAP * (cols - 1)) / cols
            cell_h = (self.height() - self.GAP * (rows - 1)) / rows
            cell = min(cell_w / width, cell_h / height)  # pixels per map pixel
            if cell > best[1]:
                best = (cols, cell)
        cols, cell = best
        rows = math.ceil(count / cols)
        used_w = cols * width * cell + self.GAP * (cols - 1)
        used_h = rows * height * cell + self.GAP * (rows - 1)
        return cols, cell, (self.width() - used_w) / 2, (self.height() - used_h) / 2

    def _cell_rect(self, index: int, layout) -> QRectF:
        cols, cell, x0, y0 = layout
        height, width = self.map_shape
        r, c = divmod(index, cols)
        return QRectF(x0 + c * (width * cell + self.GAP), y0 + r * (height * cell + self.GAP),
                      width * cell, height * cell)

    def unit_at(self, pos: QPointF) -> tuple[int, int, int] | None:
        """(map, row, col) under a widget position, or None."""
        if not self.count:
            return None
        layout = self._layout()
        height, width = self.map_shape
        cols, cell, x0, y0 = layout
        step_x, step_y = width * cell + self.GAP, height * cell + self.GAP
        c, r = int((pos.x() - x0) // step_x), int((pos.y() - y0) // step_y)
        index = r * cols + c
        if c < 0 or c >= cols or r < 0 or index >= self.count:
            return None
        rect = self._cell_rect(index, layout)
        if not rect.contains(pos):
            return None
        row = min(height - 1, int((pos.y() - rect.top()) / cell))
        col = min(width - 1, int((pos.x() - rect.left()) / cell))
        return index, row, col

    def unit_centre(self, index: int, row: int, col: int) -> QPointF:
        """The widget position of a unit's centre (tests hover it with real mouse events)."""
        layout = self._layout()
        rect = self._cell_rect(index, layout)
        cell = layout[1]
        return QPointF(rect.left() + (col + 0.5) * cell, rect.top() + (row + 0.5) * cell)

    def mouseMoveEvent(self, event) -> None:
        unit = self.unit_at(event.position())
        if unit != self._hover:
            self._hover = unit
            self.update()
            if unit is None:
                self.setToolTip("")
                self.unhovered.emit()
            else:
                index, row, col = unit
                value = float(self._maps[index, row, col])
                self.setToolTip(f"map {index}, unit ({row}, {col}): {value:.3g}")
                self.hovered.emit(index, row, col)
        super().mouseMoveEvent(event)

    def leaveEvent(self, event) -> None:
        if self._hover is not None:
            self._hover = None
            self.update()
            self.unhovered.emit()
        super().leaveEvent(event)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        if not self._images:
            painter.setPen(MUTED)
            painter.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._placeholder)
            painter.end()
            return
        layout = self._layout()
        for index, image in enumerate(self._images):
            painter.drawImage(self._cell_rect(index, layout), image)  # nearest: each unit a block
        if self._hover is not None:
            index, row, col = self._hover
            rect = self._cell_rect(index, layout)
            cell = layout[1]
            painter.setPen(QPen(ACCENT, 2))
            painter.drawRect(rect.adjusted(-2, -2, 2, 2))
            painter.setPen(QPen(HIGHLIGHT, 2))
            painter.drawRect(QRectF(rect.left() + col * cell, rect.top() + row * cell, cell, cell))
        painter.end()


class ColorLegend(QWidget):
    """The colour scale of a feature-map grid, with the values its ends stand for."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._low: float | None = None
        self._high: float | None = None
        self._caption = ""
        self._diverging = False
        self.setFixedHeight(38)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_scale(self, low: float | None, high: float | None, caption: str, diverging: bool = False) -> None:
        self._low, self._high, self._caption, self._diverging = low, high, caption, diverging
        self.update()

    @property
    def caption(self) -> str:
        return self._caption

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        bar = QRectF(60, 2, max(20, self.width() - 120), 12)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        table = DIVERGING if self._diverging else SEQUENTIAL
        for k in range(0, 256, 16):
            gradient.setColorAt(k / 255, QColor.fromRgb(int(table[k])))
        gradient.setColorAt(1.0, QColor.fromRgb(int(table[255])))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(gradient)
        painter.drawRoundedRect(bar, 3, 3)
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 0.85)
        painter.setFont(font)
        painter.setPen(MUTED)

        def fmt(v: float | None, fallback: str) -> str:
            return fallback if v is None else f"{v:.3g}"

        painter.drawText(QRectF(0, 0, 56, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                         fmt(self._low, "min"))
        painter.drawText(QRectF(bar.right() + 4, 0, 56, 16), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         fmt(self._high, "max"))
        painter.drawText(QRectF(0, 18, self.width(), 18), Qt.AlignmentFlag.AlignCenter, self._caption)
        painter.end()
