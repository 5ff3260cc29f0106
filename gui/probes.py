"""Robustness probes: for the current drawing, each class's probability as the input is shifted,
rotated and thickened, with the point where the prediction flips marked. Widgets only: the
numbers come from ``Predictor.probe`` (run off the GUI thread by the window)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from cnn_lightning.explain import PROBE_RANGES, PROBES, flip_points
from gui.colours import ACCENT, MUTED, TEXT, TRACK

TITLES = {"shift_x": "shift right (px)", "shift_y": "shift down (px)", "rotate": "rotate ↺ (°)",
          "thickness": "stroke thicker (px)"}
FLIP = QColor("#dc2626")
# Ten distinguishable hues for the other classes; the predicted class is drawn in the accent.
CLASS_COLOURS = [QColor(c) for c in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")]


class ProbeChart(QWidget):
    """One probe's curves: x = the transformation's value, y = probability 0..1, a line per class."""

    def __init__(self, kind: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.kind = kind
        self._values: np.ndarray | None = None
        self._probabilities: np.ndarray | None = None
        self._flips: tuple[float | None, float | None] = (None, None)
        self._hover: int | None = None
        self.setMinimumSize(200, 110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(300, 170)

    def set_curves(self, values: np.ndarray | None, probabilities: np.ndarray | None) -> None:
        self._values = None if values is None else np.asarray(values, dtype=np.float64)
        self._probabilities = None if probabilities is None else np.asarray(probabilities)
        self._flips = (None, None) if values is None else flip_points(self._values, self._probabilities)
        self.update()

    @property
    def probabilities(self) -> np.ndarray | None:
        return self._probabilities

    @property
    def flips(self) -> tuple[float | None, float | None]:
        return self._flips

    @property
    def label_at_zero(self) -> int | None:
        if self._values is None:
            return None
        return int(self._probabilities[int(np.argmin(np.abs(self._values)))].argmax())

    def _plot_rect(self) -> QRectF:
        return QRectF(34, 20, max(10, self.width() - 44), max(10, self.height() - 42))

    def _x(self, value: float, rect: QRectF) -> float:
        low, high = float(self._values[0]), float(self._values[-1])
        return rect.left() + (value - low) / (high - low or 1.0) * rect.width()

    def value_position(self, value: float) -> QPointF:
        """Where ``value`` sits on the x axis (tests hover it with real mouse events)."""
        rect = self._plot_rect()
        return QPointF(self._x(value, rect), rect.center().y())

    def hovered_value(self) -> float | None:
        return None if self._hover is None else float(self._values[self._hover])

    def mouseMoveEvent(self, event) -> None:
        if self._values is not None:
            rect = self._plot_rect()
            positions = np.array([self._x(v, rect) for v in self._values])
            index = int(np.argmin(np.abs(positions - event.position().x())))
            if index != self._hover:
                self._hover = index
                top = np.argsort(self._probabilities[index])[::-1][:3]
                unit = PROBES[self.kind]
                self.setToolTip(f"{self._values[index]:+g} {unit}: " +
                                ", ".join(f"{k}: {self._probabilities[index, k]:.1%}" for k in top))
                self.update()
        super().mouseMoveEvent(event)

    def leaveEvent(self, event) -> None:
        self._hover = None
        self.update()
        super().leaveEvent(event)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1.5))
        painter.setFont(small)
        painter.setPen(TEXT)
        painter.drawText(QRectF(0, 0, self.width(), 18), Qt.AlignmentFlag.AlignCenter, TITLES[self.kind])
        rect = self._plot_rect()
        painter.setPen(QPen(TRACK, 1))
        for level in (0.0, 0.5, 1.0):
            y = rect.bottom() - level * rect.height()
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            painter.setPen(MUTED)
            painter.drawText(QRectF(0, y - 8, 30, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             f"{level:g}")
            painter.setPen(QPen(TRACK, 1))
        if self._values is None:
            painter.setPen(MUTED)
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "draw a digit")
            painter.end()
            return
        low, high = float(self._values[0]), float(self._values[-1])
        painter.setPen(MUTED)
        for value in (low, 0.0, high):
            x = self._x(value, rect)
            painter.drawText(QRectF(x - 20, rect.bottom() + 2, 40, 16), Qt.AlignmentFlag.AlignCenter, f"{value:+g}")
        painter.setPen(QPen(MUTED, 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(self._x(0.0, rect), rect.top()), QPointF(self._x(0.0, rect), rect.bottom()))
        predicted = self.label_at_zero
        order = [k for k in range(10) if k != predicted] + [predicted]  # the predicted class on top
        for k in order:
            path = QPainterPath()
            for i, value in enumerate(self._values):
                point = QPointF(self._x(value, rect), rect.bottom() - self._probabilities[i, k] * rect.height())
                path.moveTo(point) if i == 0 else path.lineTo(point)
            colour = QColor(ACCENT) if k == predicted else QColor(CLASS_COLOURS[k])
            if k != predicted:
                colour.setAlpha(150)
            painter.setPen(QPen(colour, 2.5 if k == predicted else 1.2))
            painter.drawPath(path)
        for flip in self._flips:
            if flip is None:
                continue
            x = self._x(flip, rect)
            index = int(np.flatnonzero(self._values == flip)[0])
            label = int(self._probabilities[index].argmax())
            painter.setPen(QPen(FLIP, 1.5))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            painter.setBrush(FLIP)
            y = rect.bottom() - self._probabilities[index, label] * rect.height()
            painter.drawEllipse(QPointF(x, y), 3.5, 3.5)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            left = min(max(x - 40, rect.left()), rect.right() - 80)  # kept inside the plot
            text_rect = QRectF(left, rect.top() - 1, 80, 14)
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, f"→ {label} at {flip:+g}")
        if self._hover is not None:
            x = self._x(float(self._values[self._hover]), rect)
            painter.setPen(QPen(TEXT, 1, Qt.PenStyle.DotLine))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        painter.end()


class ProbePanel(QWidget):
    """The four probes in a 2x2 grid, with a one-line verdict on how robust the reading is."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.summary = QLabel("Draw a digit: how the prediction holds up as it moves, turns and thickens.")
        self.summary.setWordWrap(True)
        self.summary.setProperty("role", "muted")
        layout.addWidget(self.summary)
        grid = QGridLayout()
        grid.setSpacing(6)
        self.charts = {kind: ProbeChart(kind) for kind in PROBES}
        for index, chart in enumerate(self.charts.values()):
            grid.addWidget(chart, index // 2, index % 2)
        layout.addLayout(grid, 1)

    def set_busy(self) -> None:
        self.summary.setText("Probing…")

    def set_message(self, text: str) -> None:
        self.summary.setText(text)

    def clear(self) -> None:
        for chart in self.charts.values():
            chart.set_curves(None, None)
        self.summary.setText("Draw a digit: how the prediction holds up as it moves, turns and thickens.")

    def set_results(self, results: dict[str, np.ndarray]) -> None:
        """``results``: probe kind -> (len(values), 10) probabilities over ``PROBE_RANGES[kind]``."""
        parts = []
        for kind, chart in self.charts.items():
            chart.set_curves(PROBE_RANGES[kind], results[kind])
            below, above = chart.flips
            unit = PROBES[kind]
            if below is None and above is None:
                parts.append(f"{TITLES[kind].split(' (')[0]}: holds over the whole range")
            else:
                sides = [f"{v:+g}{'' if unit == '°' else ' '}{unit}" for v in (below, above) if v is not None]
                parts.append(f"{TITLES[kind].split(' (')[0]}: flips at {' and '.join(sides)}")
        label = self.charts["shift_x"].label_at_zero
        self.summary.setText(f"Read as {label}. " + "; ".join(parts) + ".")
