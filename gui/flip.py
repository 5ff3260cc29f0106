"""The smallest change that fools the net: the drawing perturbed (pixels kept in [0, 1]) by the
smallest L2 change found that makes it read another digit, the change itself (red: ink added,
blue: ink removed), the new digit and the size of the change. Widgets only: the result comes from
``Predictor.smallest_flip`` (off the GUI thread)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QWidget

from cnn_lightning.attribution import Flip
from gui.colours import DIVERGING, MUTED, colour_image, gray_image
from gui.style import panel_layout


class Picture(QWidget):
    """A 28x28 image, enlarged pixel for pixel, with a caption under it."""

    def __init__(self, caption: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.caption = caption
        self.image = None
        self.setMinimumSize(150, 230)
        self.setMaximumHeight(230)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image) -> None:
        self.image = image
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        side = min(self.width(), self.height() - 22)
        square = QRectF((self.width() - side) / 2, 0, side, side)
        if self.image is not None:
            painter.drawImage(square, self.image)
        else:
            painter.fillRect(square, Qt.GlobalColor.black)
        painter.setPen(MUTED)
        painter.drawText(QRectF(0, side + 2, self.width(), 20), Qt.AlignmentFlag.AlignCenter, self.caption)
        painter.end()


class FlipPanel(QWidget):
    """Before, the change, after; and a line with the numbers."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = panel_layout(self, "The smallest change found (projected gradient descent in an L2 ball, pixels "
                                    "kept in [0, 1]) that makes the net read another digit.")
        self.summary = QLabel("Draw a digit")  # above the pictures: a short window still shows the numbers
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        self.before, self.change, self.after = Picture("the drawing"), Picture("the change"), Picture("after")
        for picture in (self.before, self.change, self.after):
            row.addWidget(picture)
        layout.addLayout(row)
        layout.addStretch(1)
        self.flip: Flip | None = None

    def set_busy(self) -> None:
        if self.flip is None:
            self.summary.setText("Searching for the smallest change…")

    def clear(self, message: str = "Draw a digit") -> None:
        self.flip = None
        for picture in (self.before, self.change, self.after):
            picture.set_image(None)
        self.after.caption = "after"
        self.change.caption = "the change"
        self.summary.setText(message)

    def set_result(self, x: np.ndarray, flip: Flip | None) -> None:
        self.flip = flip
        self.before.set_image(gray_image(x))
        if flip is None:
            self.change.set_image(None)
            self.after.set_image(None)
            self.summary.setText("No change within the search's largest radius made it read another digit.")
            return
        difference = flip.image[0] - x
        bound = max(float(np.abs(difference).max()), 1e-6)
        self.change.set_image(colour_image(0.5 + 0.5 * difference / bound, DIVERGING))
        self.change.caption = f"the change (full colour: ±{bound:.2f})"
        self.after.set_image(gray_image(flip.image[0]))
        self.after.caption = f"read as {flip.label} ({flip.probability:.0%})"
        self.summary.setText(
            f"<b>{flip.original} → {flip.label}</b> with a change of L2 size <b>{flip.l2:.2f}</b> "
            f"(the drawing itself: {float(np.linalg.norm(x)):.1f}); largest pixel change {bound:.2f}. "
            "Red: ink added; blue: ink removed.")
