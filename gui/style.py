"""The app's look: the style sheet, and the white card every panel sits on."""

from __future__ import annotations

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

STYLE = """
QMainWindow, QWidget#central { background: #f3f4f6; }
QFrame#card { background: #ffffff; border: 1px solid #e5e7eb; border-radius: 8px; }
QLabel { color: #111827; }
QLabel[role="title"] { font-weight: 600; font-size: 13px; color: #111827; }
QLabel[role="muted"] { color: #6b7280; }
QLabel[role="digit"] { font-size: 44px; font-weight: 700; color: #2563eb; }
QLabel[role="digit"][unsure="true"] { color: #d97706; }
QLabel[role="verdict"] { font-size: 14px; color: #374151; }
QLabel#banner { border-radius: 6px; padding: 8px 10px; }
QLabel#banner[level="error"] { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
QLabel#banner[level="warning"] { background: #fffbeb; color: #92400e; border: 1px solid #fde68a; }
QLabel#stateMessage { color: #374151; font-size: 13px; padding: 12px; }
QLabel[role="novelty"] { font-size: 12px; color: #374151; padding: 4px 6px; border-radius: 6px; }
QLabel[role="novelty"][state="novel"] { font-size: 14px; background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
QLabel[role="novelty"][state="digit"] { background: #f0fdf4; color: #166534; }
QLabel[role="disagrees"] { color: #b91c1c; font-weight: 600; }
QPushButton { padding: 5px 12px; }
"""


def apply_style(app: QApplication) -> None:
    app.setStyle("Fusion")
    font = QFont(app.font())
    font.setPointSizeF(max(font.pointSizeF(), 9.5))
    app.setFont(font)
    app.setStyleSheet(STYLE)


def card(frame: QFrame, title: str | None = None) -> QVBoxLayout:
    """Make ``frame`` a white card (see STYLE) and return its layout, titled when ``title``."""
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(14, 12, 14, 12)
    layout.setSpacing(8)
    if title:
        label = QLabel(title)
        label.setProperty("role", "title")
        layout.addWidget(label)
    return layout


def panel_layout(widget: QWidget, intro: str) -> QVBoxLayout:
    """A tab page's layout, margins off, opened by a muted wrapped line saying what it shows."""
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    label = QLabel(intro)
    label.setWordWrap(True)
    label.setProperty("role", "muted")
    layout.addWidget(label)
    return layout


def repolish(widget: QWidget) -> None:
    """Re-apply the style sheet after a dynamic property the sheet selects on has changed."""
    widget.style().unpolish(widget)
    widget.style().polish(widget)


def scrollable(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless scroll area that resizes it: below its minimum size it scrolls
    instead of clipping, or of making its window larger than the screen."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    return area
