"""Every layer at once: the 28x28 input, each conv and pool stage's maps as small multiples, the
dense layers as bars and the ten probabilities, left to right, updated with every prediction.
Clicking a unit of a conv stage's map asks for its arithmetic (``unit_clicked``)."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from cnn_lightning.inference import Prediction
from gui.colours import ACCENT, HIGHLIGHT, MUTED, SEQUENTIAL, TEXT, TRACK, UNSURE, gray_image

TITLE_H = 30
GAP = 10
MAP_COLUMN_MIN = 64
BARS_W = 34
PROBS_W = 104
BACKGROUND = 0xFF2B2B2B  # between the small multiples


def mosaic(maps: np.ndarray, columns: int) -> np.ndarray:
    """(C, h, w) maps, each scaled to its own range, as one image of ``columns`` per row with a
    one-pixel gap; returns uint32 RGB32 pixels. One image per stage keeps painting cheap."""
    count, h, w = maps.shape
    rows = math.ceil(count / columns)
    low = maps.reshape(count, -1).min(axis=1)[:, None, None]
    span = maps.reshape(count, -1).max(axis=1)[:, None, None] - low
    scaled = np.where(span > 1e-12, (maps - low) / np.where(span > 1e-12, span, 1.0), 0.0)
    index = np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), BACKGROUND, dtype=np.uint32)
    for k in range(count):
        r, c = divmod(k, columns)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = SEQUENTIAL[index[k]]
    return out


def _qimage(pixels: np.ndarray) -> QImage:
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape
    return QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_RGB32).copy()


def bars_image(values: np.ndarray, width: int = 32) -> QImage:
    """A dense layer's units as horizontal bars, one pixel row each, length by |value|."""
    values = np.abs(np.asarray(values, dtype=np.float64).reshape(-1))
    peak = float(values.max()) or 1.0
    lengths = np.round(values / peak * width).astype(int)
    pixels = np.full((len(values), width), 0xFFF3F4F6, dtype=np.uint32)
    filled = np.arange(width)[None, :] < lengths[:, None]
    pixels[filled] = 0xFF000000 | ACCENT.rgb()
    return _qimage(pixels)


class NetworkOverview(QWidget):
    """The whole net as columns; ``set_stages`` once per model, ``set_prediction`` per drawing."""

    unit_clicked = Signal(str, int, int, int)  # layer, channel, row, col

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._stages: list[tuple[str, str]] = []
        self._clickable: set[str] = set()
        self._prediction: Prediction | None = None
        self._input: QImage | None = None
        self._cache: dict[tuple[str, int], QImage] = {}
        self._selected: tuple[str, int, int, int] | None = None
        self._field: tuple[int, int, int, int] | None = None
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(220)

    # ---- data ------------------------------------------------------------------------------

    def set_stages(self, stages: list[tuple[str, str]], clickable: set[str]) -> None:
        """``stages``: (layer, "maps" | "bars") in forward order; ``clickable``: conv-backed layers."""
        self._stages, self._clickable = list(stages), set(clickable)
        self._selected, self._field = None, None
        self._cache.clear()
        self.setMinimumWidth(self._minimum_width())
        self.update()

    def set_prediction(self, prediction: Prediction | None) -> None:
        self._prediction = prediction
        self._input = None if prediction is None else gray_image(prediction.input)
        self._cache.clear()
        self.update()

    def select(self, unit: tuple[str, int, int, int] | None, field: tuple[int, int, int, int] | None) -> None:
        """Outline ``unit`` (layer, channel, row, col) and its receptive ``field`` on the input."""
        self._selected, self._field = unit, field
        self.update()

    @property
    def prediction(self) -> Prediction | None:
        return self._prediction

    @property
    def field(self) -> tuple[int, int, int, int] | None:
        """The receptive field outlined on the overview's input."""
        return self._field

    @property
    def stages(self) -> list[tuple[str, str]]:
        return list(self._stages)

    def values_of(self, layer: str) -> np.ndarray | None:
        if self._prediction is None:
            return None
        if layer in self._prediction.maps:
            return self._prediction.maps[layer]
        return self._prediction.vectors.get(layer)

    # ---- layout ----------------------------------------------------------------------------

    def _minimum_width(self) -> int:
        maps = sum(1 for _, kind in self._stages if kind == "maps")
        bars = len(self._stages) - maps
        return 120 + maps * (MAP_COLUMN_MIN + GAP) + bars * (BARS_W + GAP) + PROBS_W + GAP

    def sizeHint(self) -> QSize:
        return QSize(max(900, self._minimum_width()), 300)

    def _columns(self) -> list[tuple[str, str, QRectF]]:
        """(layer or "input"/"probabilities", kind, body rect) for every column, left to right."""
        body_h = self.height() - TITLE_H - 6
        input_side = min(150.0, body_h, max(80.0, self.width() * 0.1))
        maps = sum(1 for _, kind in self._stages if kind == "maps")
        bars = len(self._stages) - maps
        fixed = input_side + bars * BARS_W + PROBS_W + GAP * (len(self._stages) + 1)
        map_w = max(MAP_COLUMN_MIN, (self.width() - fixed) / maps) if maps else 0
        columns = [("input", "input", QRectF(0, TITLE_H + (body_h - input_side) / 2, input_side, input_side))]
        x = input_side + GAP
        for layer, kind in self._stages:
            width = map_w if kind == "maps" else BARS_W
            columns.append((layer, kind, QRectF(x, TITLE_H, width, body_h)))
            x += width + GAP
        columns.append(("probabilities", "probabilities", QRectF(x, TITLE_H, PROBS_W, body_h)))
        return columns

    @staticmethod
    def _grid(count: int, h: int, w: int, box: QRectF) -> tuple[int, float]:
        """(columns, pixels per unit) that make ``count`` maps of h x w as large as ``box`` allows."""
        best = (1, 0.0)
        for cols in range(1, count + 1):
            rows = math.ceil(count / cols)
            scale = min(box.width() / (cols * (w + 1) - 1), box.height() / (rows * (h + 1) - 1))
            if scale > best[1]:
                best = (cols, scale)
        return best

    def _map_geometry(self, layer: str, box: QRectF) -> tuple[int, float, QRectF] | None:
        values = self.values_of(layer)
        if values is None or values.ndim != 3:
            return None
        count, h, w = values.shape
        cols, scale = self._grid(count, h, w, box)
        rows = math.ceil(count / cols)
        width, height = (cols * (w + 1) - 1) * scale, (rows * (h + 1) - 1) * scale
        return cols, scale, QRectF(box.left() + (box.width() - width) / 2, box.top(), width, height)

    def unit_centre(self, layer: str, channel: int, row: int, col: int) -> QPointF:
        """Widget position of a unit's centre (tests click it with real mouse events)."""
        box = next(rect for name, _, rect in self._columns() if name == layer)
        cols, scale, rect = self._map_geometry(layer, box)
        _, h, w = self.values_of(layer).shape
        r, c = divmod(channel, cols)
        return QPointF(rect.left() + (c * (w + 1) + col + 0.5) * scale, rect.top() + (r * (h + 1) + row + 0.5) * scale)

    def unit_at(self, pos: QPointF) -> tuple[str, int, int, int] | None:
        for layer, kind, box in self._columns():
            if kind != "maps" or not box.contains(pos):
                continue
            geometry = self._map_geometry(layer, box)
            if geometry is None:
                return None
            cols, scale, rect = geometry
            count, h, w = self.values_of(layer).shape
            gx, gy = (pos.x() - rect.left()) / scale, (pos.y() - rect.top()) / scale
            c, r = int(gx // (w + 1)), int(gy // (h + 1))
            col, row = int(gx - c * (w + 1)), int(gy - r * (h + 1))
            channel = r * cols + c
            if gx < 0 or gy < 0 or c >= cols or channel >= count or col >= w or row >= h:
                return None
            return layer, channel, row, col
        return None

    # ---- events ----------------------------------------------------------------------------

    def mouseMoveEvent(self, event) -> None:
        unit = self.unit_at(event.position())
        if unit is None:
            self.setToolTip("")
            self.unsetCursor()
        else:
            layer, channel, row, col = unit
            value = float(self.values_of(layer)[channel, row, col])
            hint = ": click to see how it was computed" if layer in self._clickable else ""
            self.setToolTip(f"{layer} · map {channel} · unit ({row}, {col}) = {value:.4g}{hint}")
            if layer in self._clickable:
                self.setCursor(Qt.CursorShape.PointingHandCursor)
            else:
                self.unsetCursor()
        super().mouseMoveEvent(event)

    def mousePressEvent(self, event) -> None:
        unit = self.unit_at(event.position())
        if event.button() == Qt.MouseButton.LeftButton and unit is not None and unit[0] in self._clickable:
            self.unit_clicked.emit(*unit)
        super().mousePressEvent(event)

    # ---- painting --------------------------------------------------------------------------

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1.5))
        painter.setFont(small)
        if not self._stages:
            painter.setPen(MUTED)
            painter.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, "Load a model to see its layers")
            painter.end()
            return
        for layer, kind, box in self._columns():
            self._paint_title(painter, layer, kind, box)
            if kind == "input":
                self._paint_input(painter, box)
            elif kind == "probabilities":
                self._paint_probabilities(painter, box)
            elif self.values_of(layer) is None:
                painter.setPen(QPen(TRACK, 1, Qt.PenStyle.DashLine))
                painter.drawRect(box.adjusted(2, 2, -2, -2))
            elif kind == "maps":
                self._paint_maps(painter, layer, box)
            else:
                self._paint_bars(painter, self.values_of(layer).reshape(-1), box)
        painter.end()

    def _paint_title(self, painter: QPainter, layer: str, kind: str, box: QRectF) -> None:
        values = self.values_of(layer) if kind in ("maps", "bars") else None
        name = {"input": "input", "probabilities": "output"}.get(kind, layer.split(".")[-1]
                                                                   if not layer.endswith(("relu", "act")) else layer.split(".")[-2])
        shape = "28×28" if kind == "input" else "10" if kind == "probabilities" else (
            "×".join(str(n) for n in values.shape) if values is not None else "")
        painter.setPen(TEXT)
        painter.drawText(QRectF(box.left() - GAP / 2, 0, box.width() + GAP, 15), Qt.AlignmentFlag.AlignCenter, name)
        painter.setPen(MUTED)
        painter.drawText(QRectF(box.left() - GAP / 2, 14, box.width() + GAP, 15), Qt.AlignmentFlag.AlignCenter, shape)

    def _paint_input(self, painter: QPainter, box: QRectF) -> None:
        if self._input is None:
            painter.fillRect(box, Qt.GlobalColor.black)
        else:
            painter.drawImage(box, self._input)
        if self._field is not None:
            top, left, bottom, right = self._field
            step = box.width() / 28
            painter.setPen(QPen(HIGHLIGHT, 2))
            painter.drawRect(QRectF(box.left() + left * step, box.top() + top * step,
                                    (right - left + 1) * step, (bottom - top + 1) * step))

    def _paint_maps(self, painter: QPainter, layer: str, box: QRectF) -> None:
        cols, scale, rect = self._map_geometry(layer, box)
        key = (layer, cols)
        if key not in self._cache:
            self._cache[key] = _qimage(mosaic(self.values_of(layer), cols))
        painter.drawImage(rect, self._cache[key])  # unsmoothed: each unit a block
        if layer in self._clickable:
            painter.setPen(QPen(ACCENT, 1))
            painter.drawLine(QPointF(box.left(), box.top() - 2), QPointF(box.right(), box.top() - 2))
        if self._selected is not None and self._selected[0] == layer:
            _, channel, row, col = self._selected
            _, h, w = self.values_of(layer).shape
            if channel < self.values_of(layer).shape[0]:
                r, c = divmod(channel, cols)
                painter.setPen(QPen(HIGHLIGHT, 2))
                painter.drawRect(QRectF(rect.left() + (c * (w + 1) + col) * scale, rect.top() + (r * (h + 1) + row) * scale,
                                        max(scale, 3), max(scale, 3)))

    @staticmethod
    def _paint_bars(painter: QPainter, values: np.ndarray, box: QRectF) -> None:
        if len(values) * 3 <= box.height():  # few units (a global pool): one clear bar each
            row_h = box.height() / len(values)
            peak = float(np.abs(values).max()) or 1.0
            painter.fillRect(box, QColor("#f3f4f6"))
            for i, value in enumerate(values):
                painter.fillRect(QRectF(box.left(), box.top() + i * row_h + 1, box.width() * abs(value) / peak,
                                        max(1.0, row_h - 2)), ACCENT)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)  # many units: averaged
        painter.drawImage(box, bars_image(values))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)

    def _paint_probabilities(self, painter: QPainter, box: QRectF) -> None:
        row_h = min(22.0, box.height() / 10)
        if self._prediction is None:
            probabilities, top, colour = np.zeros(10), None, ACCENT
        else:
            probabilities = self._prediction.probabilities
            top, colour = self._prediction.label, (UNSURE if self._prediction.uncertain else ACCENT)
        for digit in range(10):
            y = box.top() + digit * row_h
            painter.setPen(TEXT if digit == top else MUTED)
            painter.drawText(QRectF(box.left(), y, 12, row_h), Qt.AlignmentFlag.AlignCenter, str(digit))
            track = QRectF(box.left() + 16, y + row_h * 0.2, box.width() - 50, row_h * 0.6)
            painter.fillRect(track, TRACK)
            fill = QRectF(track.left(), track.top(), track.width() * float(probabilities[digit]), track.height())
            painter.fillRect(fill, colour if digit == top else QColor("#9ca3af"))
            painter.setPen(MUTED)
            painter.drawText(QRectF(track.right() + 2, y, 34, row_h), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             f"{probabilities[digit]:.0%}" if self._prediction is not None else "")
