"""The drawing canvas: white ink on black, as MNIST digits are, with undo and clear."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass(frozen=True)
class Stroke:
    width: float
    points: tuple[QPointF, ...]


@dataclass(frozen=True)
class Picture:
    """An opened image file, already fitted to the canvas; it replaces what was drawn."""

    image: QImage


@dataclass(frozen=True)
class Clear:
    pass


def _mid(a: QPointF, b: QPointF) -> QPointF:
    return QPointF((a.x() + b.x()) / 2, (a.y() + b.y()) / 2)


def stroke_path(points: tuple[QPointF, ...] | list[QPointF]) -> QPainterPath:
    """A smooth curve through mouse positions: quadratic segments between the midpoints of
    successive events, with each event as the control point. Mouse events arrive tens of pixels
    apart on a fast stroke; straight lines between them would show corners."""
    path = QPainterPath(points[0])
    if len(points) == 1:
        path.lineTo(points[0])  # a dot: the round cap draws it
        return path
    path.lineTo(_mid(points[0], points[1]))
    for i in range(1, len(points) - 1):
        path.quadTo(points[i], _mid(points[i], points[i + 1]))
    path.lineTo(points[-1])
    return path


class DrawingCanvas(QWidget):
    """A square of ``size`` pixels to draw on with the left mouse button.

    The ink lives in a grayscale QImage the size of the widget, so what is drawn is exactly what
    ``to_array`` hands to the preprocessing. History is a list of actions (strokes, opened
    pictures, clears); undo drops the last one and repaints from the last clear or picture.
    """

    changed = Signal()  # the ink changed (also during a stroke)
    strokeFinished = Signal()  # the mouse was released: the drawing is complete for now

    def __init__(self, size: int = 320, brush: float = 22.0, parent: QWidget | None = None):
        super().__init__(parent)
        self._image = QImage(size, size, QImage.Format.Format_Grayscale8)
        self._image.fill(0)
        self._actions: list[Stroke | Picture | Clear] = []
        self._points: list[QPointF] = []  # the stroke being drawn
        self._drawing = False
        self._brush = float(brush)
        self._stroke_width = self._brush
        self.setFixedSize(size, size)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # we paint every pixel
        self.setToolTip("Draw a digit with the left mouse button")

    # ---- state -------------------------------------------------------------------------------
    def sizeHint(self) -> QSize:
        return self._image.size()

    @property
    def brush_size(self) -> float:
        return self._brush

    def set_brush_size(self, width: float) -> None:
        self._brush = float(max(1.0, width))

    @property
    def can_undo(self) -> bool:
        return bool(self._actions)

    @property
    def is_drawing(self) -> bool:
        return self._drawing

    def image(self) -> QImage:
        return self._image.copy()

    def to_array(self) -> np.ndarray:
        """The ink as uint8 (rows, columns): 0 background, 255 full ink."""
        image = self._image
        stride = image.bytesPerLine()
        raw = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
        return raw.reshape(image.height(), stride)[:, : image.width()].copy()

    def is_blank(self) -> bool:
        return not self.to_array().any()

    # ---- editing -----------------------------------------------------------------------------
    def clear(self) -> None:
        if self._drawing:
            self._finish_stroke(emit=False)
        if self._actions and not isinstance(self._actions[-1], Clear):
            self._actions.append(Clear())  # undoable, so a slip of the hand loses nothing
        self._render()

    def undo(self) -> bool:
        if self._drawing:
            self._finish_stroke(emit=False)
        if not self._actions:
            return False
        self._actions.pop()
        self._render()
        return True

    def set_picture(self, ink: np.ndarray) -> None:
        """Show ``ink`` (2-D, float in [0, 1], bright on dark), scaled to fit and centred."""
        ink8 = np.ascontiguousarray(np.clip(ink * 255.0 + 0.5, 0, 255).astype(np.uint8))
        height, width = ink8.shape
        source = QImage(ink8.data, width, height, width, QImage.Format.Format_Grayscale8).copy()
        side = self._image.width()
        fitted = source.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                               Qt.TransformationMode.SmoothTransformation)
        picture = QImage(side, side, QImage.Format.Format_Grayscale8)
        picture.fill(0)
        painter = QPainter(picture)
        painter.drawImage((side - fitted.width()) // 2, (side - fitted.height()) // 2, fitted)
        painter.end()
        self._actions.append(Picture(picture))
        self._render()

    def draw_stroke(self, points: list[tuple[float, float]], width: float | None = None) -> None:
        """Add a whole stroke at once (scripts and the screenshot use this; the mouse uses events)."""
        if not points:
            return
        self._actions.append(Stroke(width or self._brush, tuple(QPointF(x, y) for x, y in points)))
        self._render()

    def _render(self, notify: bool = True) -> None:
        start = 0
        for i, action in enumerate(self._actions):
            if isinstance(action, (Clear, Picture)):
                start = i
        self._image.fill(0)
        painter = QPainter(self._image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for action in self._actions[start:]:
            if isinstance(action, Picture):
                painter.drawImage(0, 0, action.image)
            elif isinstance(action, Stroke):
                self._paint_path(painter, stroke_path(action.points), action.width)
        painter.end()
        self.update()
        if notify:
            self.changed.emit()

    def _pen(self, width: float) -> QPen:
        return QPen(QColor(255, 255, 255), width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                    Qt.PenJoinStyle.RoundJoin)

    def _paint_path(self, painter: QPainter, path: QPainterPath, width: float) -> None:
        painter.setPen(self._pen(width))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)

    def _paint_segment(self, path: QPainterPath) -> None:
        painter = QPainter(self._image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self._paint_path(painter, path, self._stroke_width)
        painter.end()
        pad = self._stroke_width / 2 + 2
        self.update(path.boundingRect().adjusted(-pad, -pad, pad, pad).toAlignedRect())
        self.changed.emit()

    # ---- mouse -------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        self._drawing = True
        self._stroke_width = self._brush  # fixed for the stroke, as the replay after undo draws it
        point = event.position()
        self._points = [point]
        self._paint_segment(stroke_path([point]))

    def mouseMoveEvent(self, event) -> None:
        if not self._drawing:
            return super().mouseMoveEvent(event)
        self._add_point(event.position())

    def mouseReleaseEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or not self._drawing:
            return super().mouseReleaseEvent(event)
        self._add_point(event.position())
        self._finish_stroke(emit=True)

    def _add_point(self, point: QPointF) -> None:
        points = self._points
        if point == points[-1]:
            return
        points.append(point)
        # Only the newest piece of the smooth curve: from the previous midpoint to the new one.
        if len(points) == 2:
            segment = QPainterPath(points[0])
            segment.lineTo(_mid(points[0], points[1]))
        else:
            segment = QPainterPath(_mid(points[-3], points[-2]))
            segment.quadTo(points[-2], _mid(points[-2], points[-1]))
        self._paint_segment(segment)

    def _finish_stroke(self, emit: bool) -> None:
        points = self._points
        self._drawing = False
        self._points = []
        if not points:
            return
        self._actions.append(Stroke(self._stroke_width, tuple(points)))
        # Repaint from the history rather than adding the tail: the pieces painted while drawing
        # overlap at their joints, and the finished stroke must equal what undo/redo repaints.
        self._render(notify=False)
        if emit:
            self.strokeFinished.emit()

    # ---- painting ----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.drawImage(event.rect(), self._image, event.rect())
        # A faint guide: MNIST digits fill a 20/28 box, so a digit this size loses little detail.
        side = self.width()
        margin = side * 4 / 28
        painter.setPen(QPen(QColor(255, 255, 255, 28), 1, Qt.PenStyle.DashLine))
        painter.drawRect(QRectF(margin, margin, side - 2 * margin, side - 2 * margin))
        painter.end()
