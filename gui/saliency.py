"""Saliency: which pixels of the input drove the predicted class, as an overlay on the 28x28
input, by one of Captum's methods (a choice: occlusion, gradient, integrated gradients, SmoothGrad,
Grad-CAM). Widgets only: the map comes from
``Predictor.saliency``, computed off the GUI thread by the window."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from cnn_lightning.attribution import IG_STEPS, OCCLUSION_PATCH, SALIENCY_METHODS, SMOOTHGRAD_SAMPLES
from gui.colours import MUTED

METHOD_LABELS = {
    "occlusion": f"Occlusion: hide a {OCCLUSION_PATCH}×{OCCLUSION_PATCH} square, see the probability drop",
    "gradient": "Gradient: |∂p/∂pixel|, how sensitive the probability is to each pixel",
    "integrated_gradients": f"Integrated gradients: pixel × ∂p/∂pixel along {IG_STEPS} steps from a black image",
    "smoothgrad": f"SmoothGrad: |∂p/∂pixel| averaged over {SMOOTHGRAD_SAMPLES} noisy copies of the drawing",
    "grad_cam": "Grad-CAM: the last conv layer's maps weighted by their gradient, placed on the input",
}
METHOD_NAMES = {"occlusion": "Occlusion", "gradient": "Gradient", "integrated_gradients": "Integrated gradients",
                "smoothgrad": "SmoothGrad", "grad_cam": "Grad-CAM"}


def overlay_image(image: np.ndarray, saliency: np.ndarray) -> QImage:
    """The input in grey with the saliency on top: red where a pixel supported the class, blue
    where hiding it made the class more likely (occlusion only), alpha by strength."""
    grey = np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 0.55  # dimmed so the colour reads
    bound = float(np.abs(saliency).max())
    strength = np.zeros_like(grey) if bound <= 0 else np.asarray(saliency, dtype=np.float64) / bound
    positive, negative = np.clip(strength, 0, 1), np.clip(-strength, 0, 1)
    red = grey + (1 - grey) * positive
    green = grey * (1 - np.maximum(positive, negative)) + 0.25 * positive
    blue = grey + (1 - grey) * negative
    rgb = (np.stack([red, green, blue], axis=-1) * 255 + 0.5).clip(0, 255).astype(np.uint32)
    pixels = np.ascontiguousarray(0xFF000000 | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]).astype(np.uint32)
    height, width = grey.shape
    return QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_RGB32).copy()


class SaliencyImage(QWidget):
    """The overlay, enlarged pixel for pixel; hovering a pixel tells its value."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._image: QImage | None = None
        self._saliency: np.ndarray | None = None
        self._message = "Draw a digit"
        self.setMinimumSize(196, 196)
        self.setMaximumHeight(270)  # the caption under it stays on a 768-pixel screen
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)

    def set_map(self, image: np.ndarray | None, saliency: np.ndarray | None, message: str = "") -> None:
        self._saliency = saliency
        self._image = None if image is None or saliency is None else overlay_image(image, saliency)
        self._message = message
        self.update()

    @property
    def saliency(self) -> np.ndarray | None:
        return self._saliency

    def _square(self) -> QRectF:
        side = min(self.width(), self.height())
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def pixel_centre(self, row: int, col: int) -> QPointF:
        square = self._square()
        step = square.width() / 28
        return QPointF(square.left() + (col + 0.5) * step, square.top() + (row + 0.5) * step)

    def mouseMoveEvent(self, event) -> None:
        if self._saliency is not None:
            square = self._square()
            step = square.width() / 28
            col = int((event.position().x() - square.left()) // step)
            row = int((event.position().y() - square.top()) // step)
            if 0 <= row < 28 and 0 <= col < 28:
                self.setToolTip(f"pixel ({row}, {col}): {self._saliency[row, col]:.3g}")
        super().mouseMoveEvent(event)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        square = self._square()
        if self._image is not None:
            painter.drawImage(square, self._image)  # unsmoothed: one block per input pixel
        else:
            painter.fillRect(square, Qt.GlobalColor.black)
        if self._message:
            painter.setPen(MUTED if self._image is None else Qt.GlobalColor.white)
            painter.drawText(square, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
        painter.end()


class SaliencyPanel(QWidget):
    """The method chooser, the overlay and a line on what it shows."""

    method_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Method"))
        self.method = QComboBox()
        for method in SALIENCY_METHODS:
            self.method.addItem(METHOD_NAMES[method], method)
        self.method.currentIndexChanged.connect(lambda _: self.method_changed.emit(self.current_method))
        row.addWidget(self.method, 1)
        layout.addLayout(row)
        self.image = SaliencyImage()
        layout.addWidget(self.image, 1)
        self.caption = QLabel(METHOD_LABELS[self.current_method])
        self.caption.setWordWrap(True)
        self.caption.setProperty("role", "muted")
        layout.addWidget(self.caption)

    @property
    def current_method(self) -> str:
        return self.method.currentData()

    def set_busy(self) -> None:
        if self.image.saliency is None:
            self.image.set_map(None, None, "computing…")

    def clear(self, message: str = "Draw a digit") -> None:
        self.image.set_map(None, None, message)
        self.caption.setText(METHOD_LABELS[self.current_method])

    def set_result(self, method: str, label: int, image: np.ndarray, saliency: np.ndarray) -> None:
        self.image.set_map(image, saliency)
        bound = float(np.abs(saliency).max())
        if method in ("occlusion", "integrated_gradients"):
            what = f"largest drop {bound:.1%}" if method == "occlusion" else f"largest {bound:.3g}"
            detail = f"red: pixels that supported “{label}” ({what}); blue: pixels that worked against it"
        elif method == "grad_cam":
            detail = f"red: where the last conv layer's maps supported “{label}” (largest {bound:.3g})"
        else:
            detail = f"red: pixels “{label}” is most sensitive to (largest {bound:.3g})"
        self.caption.setText(f"{METHOD_LABELS[method]}. {detail}.")
