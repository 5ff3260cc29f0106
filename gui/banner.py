"""The banner over the panels: a problem the user should know of (an error or a warning)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from gui.style import repolish


class Banner(QLabel):
    """Hidden until ``show_text``; coloured by ``level`` (see STYLE), selectable for copying."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("", parent)
        self.setObjectName("banner")
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hide()

    def show_text(self, text: str, error: bool) -> None:
        self.setText(text)
        self.setProperty("level", "error" if error else "warning")
        repolish(self)
        self.show()
