"""The drawing card: the canvas, its brush and its buttons (undo, clear, open, save), and image
files in and out of the canvas."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)

from cnn_lightning.images import ImageFileError, load_image_file
from gui.canvas import DrawingCanvas
from gui.style import card

LIVE_INTERVAL_MS = 50  # while drawing, predict at most this often (a throttle, not a wait)


class DrawPanel(QFrame):
    """``drawingChanged`` when the drawing needs a new prediction: at most every
    ``LIVE_INTERVAL_MS`` during a stroke, at once after it, an undo, a clear or an opened picture.
    ``opened(path)``, ``saved(path)`` and ``fileFailed(message)`` report the file buttons."""

    drawingChanged = Signal()
    opened = Signal(str)
    saved = Signal(str)
    fileFailed = Signal(str)

    def __init__(self, canvas_size: int = 320, parent: QWidget | None = None):
        super().__init__(parent)
        self._live = QTimer(self)
        self._live.setSingleShot(True)
        self._live.setInterval(LIVE_INTERVAL_MS)
        self._live.timeout.connect(self.drawingChanged)
        draw = card(self, "Draw a digit")
        self.canvas = DrawingCanvas(canvas_size)
        self.canvas.changed.connect(self._on_canvas_changed)
        self.canvas.strokeFinished.connect(self._on_stroke_finished)
        draw.addWidget(self.canvas, 0, Qt.AlignmentFlag.AlignHCenter)
        brush = QHBoxLayout()
        brush.addWidget(QLabel("Brush"))
        self.brush_slider = QSlider(Qt.Orientation.Horizontal)
        self.brush_slider.setRange(4, 48)
        self.brush_slider.setValue(int(self.canvas.brush_size))
        self.brush_label = QLabel(f"{int(self.canvas.brush_size)} px")
        self.brush_label.setMinimumWidth(44)
        self.brush_slider.valueChanged.connect(self._on_brush)
        brush.addWidget(self.brush_slider, 1)
        brush.addWidget(self.brush_label)
        draw.addLayout(brush)
        tools = QGridLayout()
        self.undo_button = QPushButton("Undo")
        self.clear_button = QPushButton("Clear")
        self.open_button = QPushButton("Open image…")
        self.save_button = QPushButton("Save PNG…")
        self.undo_button.clicked.connect(self.canvas.undo)
        self.clear_button.clicked.connect(self.canvas.clear)
        self.open_button.clicked.connect(self.open_dialog)
        self.save_button.clicked.connect(self.save_dialog)
        for i, button in enumerate((self.undo_button, self.clear_button, self.open_button, self.save_button)):
            tools.addWidget(button, i // 2, i % 2)
        draw.addLayout(tools)
        tips = QLabel(
            "Draw big, with one or more strokes; the model sees the ink cropped, scaled to 20 × 20 and "
            "centred by mass, as MNIST digits were.<br><br>"
            "<b>Ctrl+Z</b> undo · <b>Ctrl+L</b> clear · <b>Ctrl+O</b> open · <b>Ctrl+S</b> save"
        )
        tips.setProperty("role", "muted")
        tips.setWordWrap(True)
        tips.setFixedWidth(canvas_size)
        draw.addSpacing(6)
        draw.addWidget(tips)
        draw.addStretch(1)

    def _on_brush(self, value: int) -> None:
        self.canvas.set_brush_size(value)
        self.brush_label.setText(f"{value} px")

    def _on_canvas_changed(self) -> None:
        if self.canvas.is_drawing:
            if not self._live.isActive():
                self._live.start()
        else:  # undo, clear, opened picture: one change, predict now
            self._live.stop()
            self.drawingChanged.emit()

    def _on_stroke_finished(self) -> None:
        self._live.stop()
        self.drawingChanged.emit()

    def stop_live(self) -> None:
        """No pending live prediction (the window is closing)."""
        self._live.stop()

    def open_image(self, path: str | Path) -> bool:
        """Put an image file on the canvas (then it is preprocessed like a drawing)."""
        try:
            ink = load_image_file(path)
        except ImageFileError as err:
            self.fileFailed.emit(f"Could not open the image: {err}")
            return False
        self.canvas.set_picture(ink)
        self.opened.emit(str(path))
        return True

    def save_drawing(self, path: str | Path) -> bool:
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        if not self.canvas.image().save(str(path), "PNG"):
            self.fileFailed.emit(f"Could not save the drawing to {path}")
            return False
        self.saved.emit(str(path))
        return True

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open an image of a digit", "", "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp);;All files (*)"
        )
        if path:
            self.open_image(path)

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the drawing", "digit.png", "PNG images (*.png)")
        if path:
            self.save_drawing(path)
