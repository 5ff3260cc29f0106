"""Every model's prediction for the same drawing, side by side: a row of small cards; a net that
reads another digit than most of the others is marked (≠, in red)."""

from __future__ import annotations

from collections import Counter

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from cnn_lightning.inference import Prediction
from gui.messages import brief
from gui.models import ModelEntry, Models
from gui.probabilities import ProbabilityBars
from gui.style import repolish
from gui.worker import Outcome


class ComparisonCard(QFrame):
    """One architecture's prediction in the side-by-side row."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(4)
        header = QHBoxLayout()
        self.title = QLabel(name)
        self.title.setProperty("role", "title")
        self.disagrees = False
        self.verdict = QLabel("–")
        self.verdict.setProperty("role", "verdict")
        self.verdict.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.verdict)
        layout.addLayout(header)
        self.bars = ProbabilityBars(compact=True)
        layout.addWidget(self.bars)
        self.note = QLabel("")
        self.note.setProperty("role", "muted")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)

    def show_prediction(self, prediction: Prediction | None, note: str, disagrees: bool = False) -> None:
        """``disagrees``: this net reads another digit than most of the others."""
        self.disagrees = disagrees and prediction is not None
        if prediction is None:
            self.verdict.setText("–")
            self.bars.set_probabilities(None)
        else:
            mark = "?" if prediction.uncertain else ""
            flag = "≠ " if self.disagrees else ""
            self.verdict.setText(f"{flag}{prediction.label}{mark}  {prediction.confidence:.0%}")
            self.bars.set_probabilities(prediction.probabilities, prediction.uncertain)
        self.verdict.setProperty("role", "disagrees" if self.disagrees else "verdict")
        repolish(self.verdict)
        self.verdict.setToolTip("reads another digit than most of the other nets" if self.disagrees else "")
        self.note.setText(note)


class ComparisonRow(QWidget):
    """One ``ComparisonCard`` per model entry, by entry key."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.cards: dict[str, ComparisonCard] = {}  # emptied and refilled in place

    def set_entries(self, entries: list[ModelEntry]) -> None:
        for card in self.cards.values():
            self.row.removeWidget(card)
            card.deleteLater()
        self.cards.clear()
        for entry in entries:
            card = ComparisonCard(entry.name)
            self.cards[entry.key] = card
            self.row.addWidget(card)

    def show_outcome(self, models: Models, outcome: Outcome | None) -> None:
        """Each entry's prediction in ``outcome`` (none yet: a dash), or why there is none."""
        predictions = outcome.predictions if outcome else {}
        predictors, failures = models.predictors, models.failures
        shown = [p.label for key, p in predictions.items() if key in self.cards]
        votes = Counter(shown).most_common()
        # the majority's digit; none when the top two tie (then nobody is marked)
        majority = votes[0][0] if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]) else None
        for entry in models.entries:
            card = self.cards.get(entry.key)
            if card is None:
                continue
            prediction = predictions.get(entry.key)
            predictor = predictors.get(entry.key)
            if entry.key in failures:
                note = "could not load: " + brief(failures[entry.key].split(": ", 1)[-1], 120)
            elif predictor is None:
                note = "loading…"
            else:
                acc = entry.record.test_acc if entry.record else None
                note = f"{predictor.params:,} params" + (f" · test {acc:.2%}" if acc is not None else "")
                if prediction is not None:
                    note += f" · {prediction.model_ms:.1f} ms"
            disagrees = majority is not None and prediction is not None and prediction.label != majority
            card.show_prediction(prediction, note, disagrees)
