"""A grid of feature maps (or kernels) with hover, and the colour legend that goes with it."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import (
    QSizePolicy,
    QWidget,
)

from gui.colours import ACCENT, DIVERGING, HIGHLIGHT, MUTED, SEQUENTIAL, colour_image


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
