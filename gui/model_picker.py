"""Which model: the switcher over each architecture's best checkpoint, its details, Refresh and
the comparison toggle."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from cnn_lightning.checkpoints import checkpoint_epoch
from cnn_lightning.inference import Predictor
from gui.models import ModelEntry


def describe(entry: ModelEntry, predictor: Predictor | None) -> str:
    """The switcher's details line: path, epoch, best val acc, test acc, parameters."""
    record = entry.record
    parts = []
    if predictor is not None:
        parts.append(f"{predictor.architecture}, {predictor.params:,} parameters")
    elif record is not None and record.params:
        parts.append(f"{record.params:,} parameters")
    epoch = checkpoint_epoch(entry.checkpoint)
    if epoch is not None:
        parts.append(f"epoch {epoch}" + (f" of {record.epochs}" if record and record.epochs else ""))
    if record is not None:
        parts.append(f"best val acc {record.val_acc:.2%}")
        parts.append("test acc " + (f"{record.test_acc:.2%}" if record.test_acc is not None else "not run"))
    return " · ".join(parts) + f"\n{entry.checkpoint}"


class ModelPicker(QWidget):
    """The model bar. ``chosen(key)`` when the user picks an entry (not when ``show_choice`` sets
    it), ``refreshRequested`` for Refresh, ``compareToggled(on)`` for the comparison box."""

    chosen = Signal(str)
    refreshRequested = Signal()
    compareToggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        bar = QHBoxLayout(self)
        bar.setContentsMargins(0, 0, 0, 0)
        label = QLabel("Model")
        label.setProperty("role", "title")
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(220)
        self.model_combo.setPlaceholderText("no trained model found")
        self.model_combo.currentIndexChanged.connect(self._on_combo)
        self.details = QLabel("")
        self.details.setProperty("role", "muted")
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Look for trained models again")
        self.refresh_button.clicked.connect(self.refreshRequested)
        self.compare_box = QCheckBox("Compare all models")
        self.compare_box.setToolTip("Show every architecture's prediction for the same drawing")
        self.compare_box.toggled.connect(self.compareToggled)
        bar.addWidget(label)
        bar.addWidget(self.model_combo)
        bar.addWidget(self.details, 1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.compare_box)

    def set_entries(self, entries: list[ModelEntry]) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for entry in entries:
            label = entry.name + (f"  ·  val {entry.record.val_acc:.2%}" if entry.record else "")
            self.model_combo.addItem(label, entry.key)
        self.model_combo.blockSignals(False)

    def show_choice(self, key: str) -> None:
        """Point the switcher at ``key`` without emitting ``chosen``."""
        index = self.model_combo.findData(key)
        if index != self.model_combo.currentIndex():
            self.model_combo.blockSignals(True)
            self.model_combo.setCurrentIndex(index)
            self.model_combo.blockSignals(False)

    def show_details(self, entry: ModelEntry | None, predictor: Predictor | None = None) -> None:
        """The details line of ``entry`` (None: empty); given its loaded net, the path as tooltip."""
        self.details.setText(describe(entry, predictor) if entry else "")
        if entry is not None and predictor is not None:
            self.details.setToolTip(str(entry.checkpoint))

    def _on_combo(self, index: int) -> None:
        key = self.model_combo.itemData(index)
        if key is not None:
            self.chosen.emit(key)


