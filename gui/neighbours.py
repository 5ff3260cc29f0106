"""The training digits the drawing reminds the net of: the nearest training images in its
penultimate feature space, a strip of thumbnails with their labels and cosine similarity.
Widgets only: the neighbours come from ``Predictor.neighbours`` (off the GUI thread)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QFont, QPainter
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from cnn_lightning.knowledge import Neighbour
from gui.colours import ACCENT, MUTED, TEXT, gray_image
from gui.style import panel_layout

THUMB = 84  # pixels: three per input pixel


class NeighbourStrip(QWidget):
    """The thumbnails in a row: the image, then "label · similarity" under it; the label in red
    when it is not the digit the net read."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.neighbours: list[Neighbour] = []
        self.predicted: int | None = None
        self.setMinimumHeight(THUMB + 26)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(8 * (THUMB + 8), THUMB + 26)

    def set_neighbours(self, neighbours: list[Neighbour], predicted: int | None) -> None:
        self.neighbours, self.predicted = list(neighbours), predicted
        self.update()

    def thumb_rect(self, i: int) -> QRectF:
        count = max(len(self.neighbours), 1)
        side = min(THUMB, (self.width() - 8 * (count - 1)) / count)
        return QRectF(i * (side + 8), 0, side, side)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        font = QFont(self.font())
        painter.setFont(font)
        for i, n in enumerate(self.neighbours):
            rect = self.thumb_rect(i)
            painter.drawImage(rect, gray_image(np.asarray(n.image, dtype=np.float32) / 255.0))
            painter.setPen(TEXT if n.label == self.predicted else ACCENT if self.predicted is None else Qt.GlobalColor.red)
            caption = QRectF(rect.left(), rect.bottom() + 2, rect.width(), 20)
            painter.drawText(caption, Qt.AlignmentFlag.AlignCenter, f"{n.label} · {n.similarity:.3f}")
        if not self.neighbours:
            painter.setPen(MUTED)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Draw a digit")
        painter.end()

    def mouseMoveEvent(self, event) -> None:
        for i, n in enumerate(self.neighbours):
            if self.thumb_rect(i).contains(event.position()):
                self.setToolTip(f"training image {n.index}: a {n.label}, cosine similarity {n.similarity:.4f}")
        super().mouseMoveEvent(event)


class NeighboursPanel(QWidget):
    """A line on what the strip shows, the strip, and a summary of the labels."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = panel_layout(self, "The training digits nearest to the drawing in the net's last features before "
                                    "the classifier (cosine similarity): what it is reminded of.")
        self.strip = NeighbourStrip()
        self.strip.setMouseTracking(True)
        layout.addWidget(self.strip)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        layout.addStretch(1)

    def set_busy(self) -> None:
        if not self.strip.neighbours:
            self.summary.setText("Finding them… (the first time: indexing the 55,000 training digits)")

    def clear(self, message: str = "") -> None:
        self.strip.set_neighbours([], None)
        self.summary.setText(message)

    def set_result(self, predicted: int, neighbours: list[Neighbour]) -> None:
        self.strip.set_neighbours(neighbours, predicted)
        labels = [n.label for n in neighbours]
        same = labels.count(predicted)
        self.summary.setText(f"{same} of the {len(labels)} nearest training digits are {predicted}s"
                             + ("." if same == len(labels) else f"; the others: {', '.join(str(v) for v in labels if v != predicted)}."))
