"""What the model sees: the 28x28 input, and the receptive field of a hovered unit on it."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QFrame, QLabel, QWidget

from gui.colours import HIGHLIGHT, gray_image
from gui.style import card

HOVER_HINT = "Hover a feature map to see a unit's receptive field here."


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


class InputPanel(QFrame):
    """The card with the model's input and a line naming the hovered unit's receptive field."""

    def __init__(self, scale: int = 7, parent: QWidget | None = None):
        super().__init__(parent)
        layout = card(self, "What the model sees (28 × 28)")
        self.view = InputView(scale=scale)
        layout.addWidget(self.view, 0, Qt.AlignmentFlag.AlignHCenter)
        self.rf_label = QLabel(HOVER_HINT)
        self.rf_label.setProperty("role", "muted")
        self.rf_label.setWordWrap(True)
        self.rf_label.setFixedWidth(self.view.width())
        self.rf_label.setMinimumHeight(self.rf_label.fontMetrics().lineSpacing() * 3 + 4)
        self.rf_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.rf_label, 0, Qt.AlignmentFlag.AlignHCenter)

    def set_image(self, array: np.ndarray | None) -> None:
        self.view.set_image(array)

    def show_field(self, box: tuple[int, int, int, int] | None, index: int, row: int, col: int) -> None:
        """Unit (row, col) of map ``index`` sees input pixels ``box``; None: unknown."""
        self.view.set_highlight(box)
        if box is None:
            self.rf_label.setText("Receptive field unknown for this layer.")
            return
        top, left, bottom, right = box
        self.rf_label.setText(
            f"Map {index}, unit ({row}, {col}) sees input rows {top}–{bottom}, columns {left}–{right} "
            f"({bottom - top + 1} × {right - left + 1} px)."
        )

    def clear_field(self) -> None:
        self.view.set_highlight(None)
        self.rf_label.setText(HOVER_HINT)
