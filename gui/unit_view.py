"""One unit's arithmetic: the input patch of every input channel (zero padding shown), the kernel,
their element-wise product, its sum, the bias, and the value before and after the activation.
Widgets only: the numbers are a ``UnitExplanation`` from ``Predictor.explain_unit``."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from cnn_lightning.explain import UnitExplanation
from gui.colours import DIVERGING, MUTED, SEQUENTIAL, TEXT

PADDING = QColor("#9ca3af")
GRIDS = ("input", "kernel", "product")


def _colour(table: np.ndarray, position: float) -> QColor:
    return QColor.fromRgb(int(table[int(np.clip(position, 0, 1) * 255 + 0.5)]) & 0xFFFFFF)


class UnitGrids(QWidget):
    """Per input channel: patch ⊙ kernel = product, as coloured cells; the numbers are printed
    when the cells are large enough (one channel) and told on hover otherwise."""

    GAP = 14

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._unit: UnitExplanation | None = None
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def set_unit(self, unit: UnitExplanation | None) -> None:
        self._unit = unit
        self.updateGeometry()
        self.update()

    def _cell(self) -> int:
        kh, kw = self._unit.kernel.shape[1:]
        if self._unit.kernel.shape[0] == 1:
            return max(18, min(30, 150 // max(kh, kw)))
        return max(8, min(16, 54 // max(kh, kw)))

    def _block(self) -> tuple[float, float]:
        kh, kw = self._unit.kernel.shape[1:]
        cell = self._cell()
        return 3 * kw * cell + 2 * 22 + 70, kh * cell + 18

    def _columns(self, width: int | None = None) -> int:
        block_w, _ = self._block()
        return max(1, int(((width or self.width()) + self.GAP) // (block_w + self.GAP)))

    def sizeHint(self) -> QSize:
        return QSize(560, self.heightForWidth(560))

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        if self._unit is None:
            return 60
        _, block_h = self._block()
        rows = math.ceil(self._unit.patch.shape[0] / self._columns(width))
        return int(rows * (block_h + self.GAP))

    def resizeEvent(self, event) -> None:
        self.setMinimumHeight(self.heightForWidth(self.width()))
        super().resizeEvent(event)

    def _origin(self, index: int) -> QPointF:
        block_w, block_h = self._block()
        columns = self._columns()
        r, c = divmod(index, columns)
        return QPointF(c * (block_w + self.GAP), r * (block_h + self.GAP))

    def tap_centre(self, channel_index: int, grid: str, i: int, j: int) -> QPointF:
        """Widget position of tap (i, j) of one of the three grids of a channel (for tests)."""
        origin, cell = self._origin(channel_index), self._cell()
        kw = self._unit.kernel.shape[2]
        x = origin.x() + GRIDS.index(grid) * (kw * cell + 22)
        return QPointF(x + (j + 0.5) * cell, origin.y() + 16 + (i + 0.5) * cell)

    def tap_at(self, pos: QPointF) -> tuple[int, int, int] | None:
        """(channel index, i, j) under a widget position, or None."""
        if self._unit is None:
            return None
        channels, kh, kw = self._unit.kernel.shape
        cell = self._cell()
        for index in range(channels):
            origin = self._origin(index)
            for g in range(3):
                left = origin.x() + g * (kw * cell + 22)
                rect = QRectF(left, origin.y() + 16, kw * cell, kh * cell)
                if rect.contains(pos):
                    return index, min(kh - 1, int((pos.y() - rect.top()) // cell)), min(kw - 1, int((pos.x() - left) // cell))
        return None

    def mouseMoveEvent(self, event) -> None:
        tap = self.tap_at(event.position())
        if tap is None:
            self.setToolTip("")
        else:
            index, i, j = tap
            unit = self._unit
            where = (" (zero padding)" if unit.padded[i, j]
                     else f" at input ({unit.input_rows[i]}, {unit.input_cols[j]})")
            self.setToolTip(f"channel {unit.input_channels[index]}, tap ({i}, {j}){where}: "
                            f"{unit.patch[index, i, j]:.4f} × {unit.kernel[index, i, j]:.4f} = {unit.product[index, i, j]:.4f}")
        super().mouseMoveEvent(event)

    def paintEvent(self, event) -> None:
        if self._unit is None:
            return
        unit = self._unit
        painter = QPainter(self)
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() - 2))
        painter.setFont(small)
        channels, kh, kw = unit.kernel.shape
        cell = self._cell()
        numbers = cell >= 30
        patch_range = (float(unit.patch.min()), float(unit.patch.max()))
        kernel_bound = float(np.abs(unit.kernel).max()) or 1.0
        product_bound = float(np.abs(unit.product).max()) or 1.0
        sums = unit.product.reshape(channels, -1).sum(axis=1)
        for index in range(channels):
            origin = self._origin(index)
            painter.setPen(MUTED)
            painter.drawText(QRectF(origin.x(), origin.y(), 3 * kw * cell, 14), Qt.AlignmentFlag.AlignLeft,
                             f"channel {unit.input_channels[index]}")
            grids = (
                (unit.patch[index], lambda v: _colour(SEQUENTIAL, (v - patch_range[0]) / ((patch_range[1] - patch_range[0]) or 1))),
                (unit.kernel[index], lambda v: _colour(DIVERGING, 0.5 + v / (2 * kernel_bound))),
                (unit.product[index], lambda v: _colour(DIVERGING, 0.5 + v / (2 * product_bound))),
            )
            for g, (values, colour) in enumerate(grids):
                left = origin.x() + g * (kw * cell + 22)
                top = origin.y() + 16
                for i in range(kh):
                    for j in range(kw):
                        rect = QRectF(left + j * cell, top + i * cell, cell, cell)
                        if g == 0 and unit.padded[i, j]:
                            painter.fillRect(rect, QColor("#f3f4f6"))
                            painter.setPen(QPen(PADDING, 1, Qt.PenStyle.DotLine))
                            painter.drawRect(rect.adjusted(0.5, 0.5, -0.5, -0.5))
                        else:
                            painter.fillRect(rect, colour(float(values[i, j])))
                        if numbers:
                            fill = colour(float(values[i, j]))
                            painter.setPen(Qt.GlobalColor.white if fill.lightnessF() < 0.5 and not (g == 0 and unit.padded[i, j])
                                           else TEXT)
                            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, f"{values[i, j]:.2f}")
                painter.setPen(QPen(MUTED, 1))
                painter.drawRect(QRectF(left, top, kw * cell, kh * cell))
                if g < 2:
                    painter.setPen(TEXT)
                    painter.drawText(QRectF(left + kw * cell, top, 22, kh * cell), Qt.AlignmentFlag.AlignCenter,
                                     "×" if g == 0 else "=")
            painter.setPen(TEXT)
            painter.drawText(QRectF(origin.x() + 3 * kw * cell + 2 * 22 + 4, origin.y() + 16, 66, kh * cell),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"Σ {sums[index]:+.3f}")
        painter.end()


def equation_html(unit: UnitExplanation) -> str:
    """The unit's sum from the grids to the activation, as one line of rich text per step."""
    taps = unit.patch.size
    padded = int(unit.padded.sum()) * unit.patch.shape[0]
    lines = [
        f"<b>{unit.layer}</b> · map {unit.channel} · unit ({unit.row}, {unit.col})",
        f"Σ input × kernel over {taps} taps ({padded} in the zero padding) = <b>{unit.total:.4f}</b>",
        f"+ bias {unit.bias:.4f} = <b>{unit.total + unit.bias:.4f}</b> "
        f"&nbsp;(the layer computed {unit.value:.4f}: before the activation)",
    ]
    lines += [f"→ {step.kind} <span style='color:#6b7280'>{step.layer}</span>: {step.formula}" for step in unit.steps]
    if unit.activated is not None:
        lines.append(f"after the activation: <b>{unit.activated:.4f}</b>")
    lines.append("<span style='color:#6b7280'>below, per input channel: the layer's input under the kernel "
                 "(zero padding dotted) × the kernel = their product, and its sum</span>")
    if unit.input_note:
        lines.append(f"<span style='color:#6b7280'>the layer's input is {unit.input_note}</span>")
    if unit.field is not None:
        top, left, bottom, right = unit.field
        lines.append(f"<span style='color:#6b7280'>receptive field: input rows {top}–{bottom}, "
                     f"columns {left}–{right} (outlined on the input)</span>")
    return "<br>".join(lines)


class UnitPanel(QWidget):
    """The equation above the grids; the grids scroll when a layer has many input channels."""

    PROMPT = "Click a unit of a conv layer's map in the overview to see how it was computed."

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.equation = QLabel(self.PROMPT)
        self.equation.setWordWrap(True)
        self.equation.setTextFormat(Qt.TextFormat.RichText)
        self.equation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.equation)
        self.grids = UnitGrids()
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.grids)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        layout.addWidget(self.scroll, 1)
        self._unit: UnitExplanation | None = None

    @property
    def unit(self) -> UnitExplanation | None:
        return self._unit

    def set_unit(self, unit: UnitExplanation | None) -> None:
        self._unit = unit
        self.equation.setText(self.PROMPT if unit is None else equation_html(unit))
        self.grids.set_unit(unit)

    def set_message(self, text: str) -> None:
        self.set_unit(None)
        self.equation.setText(text)
