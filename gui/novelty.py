"""The verdict beside the probabilities: does the drawing look like the digits the net was
trained on? A view of the model in use (``set_model``, ``set_prediction``); the score comes from
``Predictor.novelty``, computed on a thread of its own (the first call fits the detector or reads
its cache: seconds), so drawing never waits for it."""

from __future__ import annotations

import torch
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QWidget

from cnn_lightning.inference import Prediction, Predictor
from cnn_lightning.knowledge import Novelty
from gui.jobs import Jobs
from gui.style import repolish

DETECTOR_NAMES = {"max_softmax": "max softmax", "energy": "energy", "mahalanobis": "Mahalanobis distance",
                  "knn": "distance to the 10th nearest training digit"}


def verdict_text(novelty: Novelty) -> str:
    how = f"score {novelty.score:.3g} {'≤' if novelty.is_digit else '>'} {novelty.threshold:.3g}"
    if novelty.is_digit:
        return f"Looks like a digit ({how})"
    return f"<b>⚠ This doesn't look like a digit</b> ({how})"


class NoveltyLabel(QLabel):
    """One line under the digit: the verdict, or what is being computed. ``shown`` repeats it
    (text, state) for a copy elsewhere (the Explain tab, where this column gives way)."""

    shown = Signal(str, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setProperty("role", "novelty")
        self.jobs = Jobs(self)
        self.jobs.finished.connect(lambda _, novelty: self.show_novelty(novelty))
        self.jobs.failed.connect(lambda _, message: self._show("", f"No novelty check: {message}"))
        self._predictor: Predictor | None = None
        self.novelty: Novelty | None = None
        self.hide()

    def _show(self, state: str, text: str) -> None:
        self.setProperty("state", state)
        repolish(self)
        self.setText(text)
        self.setVisible(bool(text))
        self.shown.emit(text, state)

    def set_model(self, predictor: Predictor | None, prediction: Prediction | None = None) -> None:
        self._predictor = predictor
        self.set_prediction(prediction)

    def set_prediction(self, prediction: Prediction | None) -> None:
        self.novelty = None
        predictor = self._predictor
        if predictor is None or prediction is None:
            self.jobs.cancel("novelty")
            self._show("", "")
            return
        x = torch.from_numpy(prediction.input.copy())[None]
        if self.text() == "" or self.property("state") == "":
            self._show("", "Checking whether it looks like a digit… (the first time: fitting the detector)")
        self.jobs.submit("novelty", lambda: predictor.novelty(x))

    def show_novelty(self, novelty: Novelty) -> None:
        self.novelty = novelty
        name = DETECTOR_NAMES.get(novelty.detector, novelty.detector)
        self._show("digit" if novelty.is_digit else "novel", verdict_text(novelty))
        self.setToolTip(f"Detector: {name}, on the net's penultimate features. Its threshold lets 95% of the "
                        "validation digits through; above it, don't trust the reading.")

    @staticmethod
    def mirror(label: QLabel):
        """A slot for ``shown`` that keeps ``label`` (role "novelty") saying the same."""
        def show(text: str, state: str) -> None:
            label.setProperty("state", state)
            repolish(label)
            label.setText(text)
            label.setVisible(bool(text))
        return show

    def shutdown(self) -> None:
        self.jobs.shutdown()
