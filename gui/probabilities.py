"""What the model says: the predicted digit, the verdict, whether the drawing looks like a digit
at all (``gui/novelty.py``) and the ten probability bars."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QStackedWidget, QVBoxLayout, QWidget

from gui.colours import ACCENT, MUTED, TEXT, TRACK, UNSURE
from gui.novelty import NoveltyLabel
from gui.style import card, repolish


class ProbabilityBars(QWidget):
    """Ten horizontal bars, one per digit; the top class is coloured (amber when unsure)."""

    def __init__(self, compact: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self._compact = compact
        self._probabilities: np.ndarray | None = None
        self._uncertain = False
        self._row = 13 if compact else 20
        self.setMinimumHeight(10 * self._row)
        self.setMinimumWidth(110 if compact else 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(140 if self._compact else 260, 10 * self._row)

    def set_probabilities(self, probabilities: np.ndarray | None, uncertain: bool = False) -> None:
        self._probabilities = None if probabilities is None else np.asarray(probabilities, dtype=float)
        self._uncertain = uncertain
        self.update()

    def probabilities(self) -> np.ndarray | None:
        return self._probabilities

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * (0.8 if self._compact else 1.0))
        painter.setFont(font)
        probs = self._probabilities
        top = int(probs.argmax()) if probs is not None else -1
        label_w = 16 if self._compact else 22
        value_w = 0 if self._compact else 56
        bar_x = label_w + 4
        bar_w = max(10, self.width() - bar_x - value_w - 4)
        row = self._row
        for digit in range(10):
            y = digit * row
            bar_h = row - (4 if self._compact else 8)
            bar_y = y + (row - bar_h) / 2
            font.setBold(digit == top)
            painter.setFont(font)
            painter.setPen(TEXT if digit == top else MUTED)
            painter.drawText(QRectF(0, y, label_w, row), Qt.AlignmentFlag.AlignCenter, str(digit))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(TRACK)
            painter.drawRoundedRect(QRectF(bar_x, bar_y, bar_w, bar_h), 3, 3)
            if probs is None:
                continue
            p = float(probs[digit])
            colour = (UNSURE if self._uncertain else ACCENT) if digit == top else QColor("#93a3b8")
            painter.setBrush(colour)
            if p > 0.002:
                painter.drawRoundedRect(QRectF(bar_x, bar_y, max(bar_h / 2, bar_w * p), bar_h), 3, 3)
            if value_w:
                painter.setPen(TEXT if digit == top else MUTED)
                painter.drawText(QRectF(bar_x + bar_w + 4, y, value_w, row),
                                 Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{p:.1%}")
        painter.end()


class PredictionPanel(QFrame):
    """The card with the prediction: the digit, the verdict and the bars; or, in its place, a
    message (no model, loading, a load error)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = card(self, "Prediction")
        self.result_stack = QStackedWidget()
        result_page = QWidget()
        result = QVBoxLayout(result_page)
        result.setContentsMargins(0, 0, 0, 0)
        headline = QHBoxLayout()
        self.digit_label = QLabel("–")
        self.digit_label.setProperty("role", "digit")
        self.digit_label.setMinimumWidth(64)
        self.digit_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict_label = QLabel("Draw a digit")
        self.verdict_label.setProperty("role", "verdict")
        self.verdict_label.setWordWrap(True)
        headline.addWidget(self.digit_label)
        headline.addWidget(self.verdict_label, 1)
        result.addLayout(headline)
        self.novelty = NoveltyLabel()  # a view of its own: the window feeds it the net and each drawing
        result.addWidget(self.novelty)
        self.bars = ProbabilityBars()
        result.addWidget(self.bars)
        result.addStretch(1)
        self.result_stack.addWidget(result_page)
        self.state_label = QLabel("")
        self.state_label.setObjectName("stateMessage")
        self.state_label.setWordWrap(True)
        self.state_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.state_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_stack.addWidget(self.state_label)
        layout.addWidget(self.result_stack)

    def show_result(self) -> None:
        self.result_stack.setCurrentIndex(0)

    def show_message(self, html: str) -> None:
        self.state_label.setText(html)
        self.result_stack.setCurrentIndex(1)

    def show_blank(self) -> None:
        self.digit_label.setText("–")
        self.digit_label.setProperty("unsure", False)
        self.verdict_label.setText("Draw a digit")
        self.bars.set_probabilities(None)

    def show_prediction(self, prediction) -> None:
        probs = prediction.probabilities
        first, second = np.argsort(probs)[::-1][:2]
        self.digit_label.setText(str(prediction.label))
        self.digit_label.setProperty("unsure", prediction.uncertain)
        repolish(self.digit_label)
        if prediction.uncertain:
            self.verdict_label.setText(
                f"<b>Not sure</b><br>{first} ({probs[first]:.0%}) or {second} ({probs[second]:.0%})?"
            )
        else:
            self.verdict_label.setText(f"<b>{prediction.confidence:.1%}</b> confident")
        self.bars.set_probabilities(probs, prediction.uncertain)
