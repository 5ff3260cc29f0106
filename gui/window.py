"""The main window: canvas, model input, prediction, feature maps, model switcher, comparison."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QFileSystemWatcher, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSlider,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from cnn_lightning.checkpoints import (
    RunRecord,
    best_per_architecture,
    checkpoint_epoch,
    record_for_checkpoint,
)
from cnn_lightning.config import project_root
from cnn_lightning.images import ImageFileError, load_image_file
from cnn_lightning.inference import Prediction, Predictor
from gui.canvas import DrawingCanvas
from gui.views import ColorLegend, FeatureMapGrid, InputView, ProbabilityBars
from gui.worker import Inference, Outcome

log = logging.getLogger(__name__)

TRAIN_COMMANDS = ("make train", "python -m cnn_lightning.train model=tiny")
LIVE_INTERVAL_MS = 50  # while drawing, predict at most this often (a throttle, not a wait)
KERNELS = "kernels"  # the layer chooser's entry for the first conv's weights


@dataclass(frozen=True)
class ModelEntry:
    """One choice in the model switcher: an architecture's best checkpoint (or a given file)."""

    key: str
    name: str
    checkpoint: Path
    record: RunRecord | None


def find_entries(outputs_root: Path, checkpoint: Path | None = None) -> list[ModelEntry]:
    """The given checkpoint (if any) first, then the best checkpoint of each architecture found."""
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    if checkpoint is not None:
        record = record_for_checkpoint(checkpoint) if checkpoint.is_file() else None
        name = record.model if record else checkpoint.stem
        entries.append(ModelEntry(f"file:{checkpoint}", name, checkpoint, record))
        seen.add(checkpoint.resolve())
    for record in best_per_architecture(outputs_root):
        if record.checkpoint.resolve() not in seen:
            entries.append(ModelEntry(record.model, record.model, record.checkpoint, record))
    return entries


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


def _card(title: str | None = None) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame()
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(14, 12, 14, 12)
    layout.setSpacing(8)
    if title:
        label = QLabel(title)
        label.setProperty("role", "title")
        layout.addWidget(label)
    return frame, layout


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

    def show_prediction(self, prediction: Prediction | None, note: str) -> None:
        if prediction is None:
            self.verdict.setText("–")
            self.bars.set_probabilities(None)
        else:
            mark = "?" if prediction.uncertain else ""
            self.verdict.setText(f"{prediction.label}{mark}  {prediction.confidence:.0%}")
            self.bars.set_probabilities(prediction.probabilities, prediction.uncertain)
        self.note.setText(note)


class MainWindow(QMainWindow):
    predictionShown = Signal(object)  # the Outcome the views now show
    modelReady = Signal(str)  # key of the model now in use
    modelFailed = Signal(str, str)  # key, message

    def __init__(self, outputs_root: str | Path | None = None, checkpoint: str | Path | None = None,
                 canvas_size: int = 320):
        super().__init__()
        self.setWindowTitle("cnn-lightning — draw a digit")
        self.outputs_root = Path(outputs_root) if outputs_root else Path(project_root()) / "outputs"
        self.checkpoint_arg = Path(checkpoint).expanduser() if checkpoint else None
        self.entries: list[ModelEntry] = []
        self.predictors: dict[str, Predictor] = {}
        self.failures: dict[str, str] = {}
        self.loading: set[str] = set()
        self.current: str | None = None  # the switcher's choice
        self.active: str | None = None  # the loaded model in use (the choice, once it has loaded)
        self.state = "starting"
        self.message = ""
        self.last_outcome: Outcome | None = None
        self._layer: str | None = None

        self.inference = Inference(self)
        self.inference.loaded.connect(self._on_loaded)
        self.inference.load_failed.connect(self._on_load_failed)
        self.inference.finished.connect(self._on_outcome)

        self._live = QTimer(self)
        self._live.setSingleShot(True)
        self._live.setInterval(LIVE_INTERVAL_MS)
        self._live.timeout.connect(self.request_prediction)

        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_file_changed)

        self._build(canvas_size)
        self._update_layers()  # the empty grid's placeholder until a model is in use
        self.refresh_models()

    # ---- layout ------------------------------------------------------------------------------
    def _build(self, canvas_size: int) -> None:
        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(12, 10, 12, 10)
        root.setSpacing(10)

        # Model bar: switcher, details, refresh, comparison toggle.
        bar = QHBoxLayout()
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
        self.refresh_button.clicked.connect(self.refresh_models)
        self.compare_box = QCheckBox("Compare all models")
        self.compare_box.setToolTip("Show every architecture's prediction for the same drawing")
        self.compare_box.toggled.connect(self.set_compare)
        bar.addWidget(label)
        bar.addWidget(self.model_combo)
        bar.addWidget(self.details, 1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.compare_box)
        root.addLayout(bar)

        self.banner = QLabel("")
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()
        root.addWidget(self.banner)

        columns = QHBoxLayout()
        columns.setSpacing(10)
        root.addLayout(columns, 1)

        # Left: the canvas and its tools.
        draw_card, draw = _card("Draw a digit")
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
        self.undo_button.clicked.connect(self.undo)
        self.clear_button.clicked.connect(self.clear)
        self.open_button.clicked.connect(self._open_dialog)
        self.save_button.clicked.connect(self._save_dialog)
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
        columns.addWidget(draw_card)

        # Middle: what the model sees, and what it says.
        middle = QVBoxLayout()
        middle.setSpacing(10)
        input_card, input_layout = _card("What the model sees (28 × 28)")
        self.input_view = InputView(scale=7)
        input_layout.addWidget(self.input_view, 0, Qt.AlignmentFlag.AlignHCenter)
        self.rf_label = QLabel("Hover a feature map to see a unit's receptive field here.")
        self.rf_label.setProperty("role", "muted")
        self.rf_label.setWordWrap(True)
        self.rf_label.setFixedWidth(self.input_view.width())
        self.rf_label.setMinimumHeight(self.rf_label.fontMetrics().lineSpacing() * 3 + 4)
        self.rf_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        input_layout.addWidget(self.rf_label, 0, Qt.AlignmentFlag.AlignHCenter)
        middle.addWidget(input_card)

        prediction_card, prediction_layout = _card("Prediction")
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
        prediction_layout.addWidget(self.result_stack)
        middle.addWidget(prediction_card, 1)
        middle_column = QWidget()
        middle_column.setLayout(middle)
        middle.setContentsMargins(0, 0, 0, 0)
        middle_column.setFixedWidth(300)  # the same in every state, whatever the messages say
        columns.addWidget(middle_column)

        # Right: feature maps.
        maps_card, maps = _card()
        header = QHBoxLayout()
        title = QLabel("Feature maps")
        title.setProperty("role", "title")
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(QLabel("Layer"))
        self.layer_combo = QComboBox()
        self.layer_combo.setMinimumWidth(250)
        self.layer_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.layer_combo.currentIndexChanged.connect(self._on_layer)
        header.addWidget(self.layer_combo)
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(["Scale each map", "One scale per layer"])
        self.scale_combo.setToolTip("Each map to its own min..max, or one range for the whole layer")
        self.scale_combo.currentIndexChanged.connect(self._show_layer)
        header.addWidget(self.scale_combo)
        maps.addLayout(header)
        self.grid = FeatureMapGrid()
        self.grid.setMinimumSize(380, 380)
        self.grid.hovered.connect(self._on_hover)
        self.grid.unhovered.connect(self._on_unhover)
        maps.addWidget(self.grid, 1)
        self.legend = ColorLegend()
        maps.addWidget(self.legend)
        columns.addWidget(maps_card, 1)

        # Bottom: side-by-side comparison, shown on demand.
        self.compare_frame = QWidget()
        self.compare_row = QHBoxLayout(self.compare_frame)
        self.compare_row.setContentsMargins(0, 0, 0, 0)
        self.compare_cards: dict[str, ComparisonCard] = {}
        self.compare_frame.hide()
        root.addWidget(self.compare_frame)

        self.setCentralWidget(central)
        self.status = self.statusBar()
        self._actions()

    def _actions(self) -> None:
        for text, keys, slot in (
            ("Undo", QKeySequence.StandardKey.Undo, self.undo),
            ("Clear", QKeySequence("Ctrl+L"), self.clear),
            ("Open image", QKeySequence.StandardKey.Open, self._open_dialog),
            ("Save PNG", QKeySequence.StandardKey.Save, self._save_dialog),
        ):
            action = QAction(text, self)
            action.setShortcut(keys)
            action.triggered.connect(slot)
            self.addAction(action)

    # ---- models ------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Scan for checkpoints again; keep the current choice when it is still there."""
        try:
            self.entries = find_entries(self.outputs_root, self.checkpoint_arg)
        except OSError as err:  # an unreadable outputs folder is an empty state, not a crash
            self.entries = []
            self._show_banner(f"Could not read {self.outputs_root}: {err}", error=True)
        keys = [e.key for e in self.entries]
        for key in list(self.predictors):  # a checkpoint re-trained in place must load afresh
            entry = self.entry(key)
            if entry is None or entry.checkpoint != self.predictors[key].checkpoint:
                self.predictors.pop(key)
        self.failures = {}  # a file that failed may have been replaced: Refresh tries again
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for entry in self.entries:
            label = entry.name + (f"  ·  val {entry.record.val_acc:.2%}" if entry.record else "")
            self.model_combo.addItem(label, entry.key)
        self.model_combo.blockSignals(False)
        self._rebuild_compare_cards()
        if not self.entries:
            self.current = self.active = None
            self._watch(None)
            self.details.setText("")
            self._set_state("no-model", self._no_model_text())
            self._update_layers()
            self.request_prediction()
            return
        choice = self.current if self.current in keys else keys[0]
        self.current = None
        self.select_model(choice)
        if self.compare_box.isChecked():
            self._load_all()

    def _no_model_text(self) -> str:
        return (
            "<b>No trained model found</b><br><br>"
            f"Looked for runs in<br><code>{self.outputs_root}</code><br><br>"
            f"Train one with<br><code>{TRAIN_COMMANDS[0]}</code><br>or<br><code>{TRAIN_COMMANDS[1]}</code>"
            "<br><br>then press <b>Refresh</b>. You can draw meanwhile: the 28 × 28 input still updates."
        )

    def entry(self, key: str | None) -> ModelEntry | None:
        return next((e for e in self.entries if e.key == key), None)

    def select_model(self, key: str) -> None:
        """Switch to model ``key`` (an entry of the switcher); loads it off the GUI thread."""
        entry = self.entry(key)
        if entry is None:
            return
        index = self.model_combo.findData(key)
        if index != self.model_combo.currentIndex():
            self.model_combo.blockSignals(True)
            self.model_combo.setCurrentIndex(index)
            self.model_combo.blockSignals(False)
        if key == self.current and key in self.predictors:
            return
        self.current = key
        self.inference.invalidate()  # a result of the previous model must not show as this one's
        if key in self.predictors:
            self._activate(key)
        else:
            self.details.setText(describe(entry, None))
            self.status.showMessage(f"Loading {entry.name}…")
            if self.active is None:
                self._set_state("loading", f"Loading {entry.name}…")
            self._load(entry)

    def _load(self, entry: ModelEntry) -> None:
        if entry.key not in self.loading:
            self.loading.add(entry.key)
            self.inference.load(entry.key, entry.checkpoint, entry.record, entry.name)

    def _load_all(self) -> None:
        for entry in self.entries:
            if entry.key not in self.predictors and entry.key not in self.failures:
                self._load(entry)

    def _on_combo(self, index: int) -> None:
        key = self.model_combo.itemData(index)
        if key is not None:
            self.select_model(key)

    def _on_loaded(self, key: str, predictor: Predictor) -> None:
        self.loading.discard(key)
        entry = self.entry(key)
        if entry is None or entry.checkpoint != predictor.checkpoint:
            return  # the list changed while it loaded
        self.predictors[key] = predictor
        self.failures.pop(key, None)
        if key == self.current:
            self._activate(key)
        elif self.compare_box.isChecked():
            self.request_prediction()

    def _on_load_failed(self, key: str, message: str) -> None:
        self.loading.discard(key)
        self.failures[key] = message
        entry = self.entry(key)
        name = entry.name if entry else key
        log.warning("could not load %s: %s", name, message)
        self.status.showMessage(f"Could not load {name}")
        if key == self.current:
            if self.active is not None and self.active in self.predictors:
                # Keep using the model that works; the switcher goes back to it.
                fallback = self.entry(self.active)
                self.current = None
                self.select_model(self.active)
                self._show_banner(
                    f"Could not load {name}: {brief(message)}\nStill using {fallback.name if fallback else self.active}.",
                    error=True,
                )
                self.banner.setToolTip(message)
            else:
                self.details.setText(describe(entry, None) if entry else "")
                self.state_label.setToolTip(message)
                self._set_state(
                    "load-error",
                    f"<b>Could not load {name}</b><br><br>{_escape(brief(message))}<br><br>"
                    f"Choose another model, or train a new one with <code>{TRAIN_COMMANDS[0]}</code>.",
                )
        if self.compare_box.isChecked():
            self._update_compare()
        self.modelFailed.emit(key, message)

    def _activate(self, key: str) -> None:
        entry = self.entry(key)
        predictor = self.predictors[key]
        self.active = key
        self.details.setText(describe(entry, predictor))
        self.details.setToolTip(str(entry.checkpoint))
        self._watch(entry.checkpoint)
        self._hide_banner()
        self._update_layers()
        self.state = "empty-canvas" if self.canvas.is_blank() else "ready"
        self.result_stack.setCurrentIndex(0)
        self.modelReady.emit(key)
        self.request_prediction()

    def _watch(self, path: Path | None) -> None:
        if self._watcher.files():
            self._watcher.removePaths(self._watcher.files())
        if path is not None and path.is_file():
            self._watcher.addPath(str(path))

    def _on_file_changed(self, path: str) -> None:
        entry = self.entry(self.active)
        if entry is None or str(entry.checkpoint) != path:
            return
        if not Path(path).exists():
            self._show_banner(
                f"The checkpoint file {path} was deleted or moved. The model stays loaded and keeps "
                "working; press Refresh to list the checkpoints that remain.",
                error=False,
            )
        else:
            self._watcher.addPath(path)  # some editors replace files: keep watching the new one

    # ---- comparison ----------------------------------------------------------------------------
    def set_compare(self, on: bool) -> None:
        if self.compare_box.isChecked() != on:
            self.compare_box.setChecked(on)  # re-enters through the toggled signal
            return
        self.compare_frame.setVisible(on)
        if on:
            self._load_all()
            self._update_compare()
        self.request_prediction()

    def _rebuild_compare_cards(self) -> None:
        for card in self.compare_cards.values():
            self.compare_row.removeWidget(card)
            card.deleteLater()
        self.compare_cards = {}
        for entry in self.entries:
            card = ComparisonCard(entry.name)
            self.compare_cards[entry.key] = card
            self.compare_row.addWidget(card)

    def _update_compare(self) -> None:
        outcome = self.last_outcome
        for entry in self.entries:
            card = self.compare_cards.get(entry.key)
            if card is None:
                continue
            prediction = outcome.predictions.get(entry.key) if outcome else None
            predictor = self.predictors.get(entry.key)
            if entry.key in self.failures:
                note = "could not load: " + brief(self.failures[entry.key].split(": ", 1)[-1], 120)
            elif predictor is None:
                note = "loading…"
            else:
                acc = entry.record.test_acc if entry.record else None
                note = f"{predictor.params:,} params" + (f" · test {acc:.2%}" if acc is not None else "")
                if prediction is not None:
                    note += f" · {prediction.model_ms:.1f} ms"
            card.show_prediction(prediction, note)

    # ---- drawing and prediction ----------------------------------------------------------------
    def _on_brush(self, value: int) -> None:
        self.canvas.set_brush_size(value)
        self.brush_label.setText(f"{value} px")

    def _on_canvas_changed(self) -> None:
        if self.canvas.is_drawing:
            if not self._live.isActive():
                self._live.start()
        else:  # undo, clear, opened picture: one change, predict now
            self._live.stop()
            self.request_prediction()

    def _on_stroke_finished(self) -> None:
        self._live.stop()
        self.request_prediction()

    def undo(self) -> None:
        self.canvas.undo()

    def clear(self) -> None:
        self.canvas.clear()

    def request_prediction(self) -> int:
        predictors = {}
        if self.active in self.predictors:
            predictors[self.active] = self.predictors[self.active]
        if self.compare_box.isChecked():
            predictors.update((k, p) for k, p in self.predictors.items() if self.entry(k))
        return self.inference.predict(self.canvas.to_array(), predictors)

    def _on_outcome(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self.input_view.set_image(outcome.input)
        prediction = outcome.predictions.get(self.active) if self.active else None
        if self.active is not None and self.state not in ("no-model",):
            if outcome.blank:
                self.state = "empty-canvas"
                self.digit_label.setText("–")
                self.digit_label.setProperty("unsure", False)
                self.verdict_label.setText("Draw a digit")
                self.bars.set_probabilities(None)
                self.status.showMessage("The canvas is empty: draw a digit")
            elif prediction is not None:
                self.state = "ready"
                self._show_prediction(prediction, outcome)
            elif self.active in outcome.errors:
                self.state = "predict-error"
                self._show_banner(f"Prediction failed: {outcome.errors[self.active]}", error=True)
            self.result_stack.setCurrentIndex(0)
        self._show_layer()
        if self.compare_box.isChecked():
            self._update_compare()
        self.predictionShown.emit(outcome)

    def _show_prediction(self, prediction: Prediction, outcome: Outcome) -> None:
        probs = prediction.probabilities
        first, second = np.argsort(probs)[::-1][:2]
        self.digit_label.setText(str(prediction.label))
        self.digit_label.setProperty("unsure", prediction.uncertain)
        self.digit_label.style().unpolish(self.digit_label)
        self.digit_label.style().polish(self.digit_label)
        if prediction.uncertain:
            self.verdict_label.setText(
                f"<b>Not sure</b><br>{first} ({probs[first]:.0%}) or {second} ({probs[second]:.0%})?"
            )
        else:
            self.verdict_label.setText(f"<b>{prediction.confidence:.1%}</b> confident")
        self.bars.set_probabilities(probs, prediction.uncertain)
        self.status.showMessage(
            f"{self.entry(self.active).name}: model {prediction.model_ms:.2f} ms · "
            f"preprocessing {outcome.preprocess_ms:.2f} ms"
        )

    # ---- feature maps --------------------------------------------------------------------------
    def _update_layers(self) -> None:
        predictor = self.predictors.get(self.active) if self.active else None
        previous = self._layer
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        if predictor is not None:
            for name in predictor.layers:
                shape = " × ".join(str(d) for d in predictor.shapes[name])
                self.layer_combo.addItem(f"{_short(name)}  ({shape})", name)
            kernels = predictor.first_conv_kernels()
            if kernels is not None:
                k_name, weights = kernels
                self.layer_combo.addItem(f"{_short(k_name)} kernels  ({weights.shape[0]} × "
                                         f"{weights.shape[1]} × {weights.shape[2]} weights)", KERNELS)
            index = self.layer_combo.findData(previous)
            if index < 0:  # a new net: start at the first activation, the clearest view
                first = predictor.activations[0] if predictor.activations else None
                index = max(0, self.layer_combo.findData(first))
            self.layer_combo.setCurrentIndex(index)
            self._layer = self.layer_combo.currentData()
        else:
            self._layer = None
        self.layer_combo.blockSignals(False)
        self._show_layer()

    def _on_layer(self, index: int) -> None:
        self._layer = self.layer_combo.itemData(index)
        self._show_layer()

    def select_layer(self, name: str) -> None:
        index = self.layer_combo.findData(name)
        if index >= 0:
            self.layer_combo.setCurrentIndex(index)

    def _show_layer(self) -> None:
        per_map = self.scale_combo.currentIndex() == 0
        predictor = self.predictors.get(self.active) if self.active else None
        self._on_unhover()
        self.layer_combo.setEnabled(predictor is not None)
        if predictor is None or self._layer is None:
            self.grid.set_maps(None)
            self.grid.set_placeholder("Feature maps appear when a model is loaded.")
            self.legend.hide()
            return
        if self._layer == KERNELS:
            name, weights = predictor.first_conv_kernels()
            self.grid.set_maps(weights, per_map=per_map, diverging=True)
            self._legend_for(None)
            return
        outcome = self.last_outcome
        prediction = outcome.predictions.get(self.active) if outcome else None
        if prediction is None or self._layer not in prediction.maps:
            self.grid.set_maps(None)
            self.grid.set_placeholder("Draw a digit to see what every layer makes of it.")
            self.legend.hide()
            return
        self.grid.set_maps(prediction.maps[self._layer], per_map=per_map)
        self._legend_for(None)

    def _legend_for(self, index: int | None) -> None:
        self.legend.show()
        per_map = self.scale_combo.currentIndex() == 0
        kernels = self._layer == KERNELS
        what = "weight" if kernels else "activation"
        if index is None and per_map:
            caption = f"{what}: each map scaled to its own range (hover a map for its values)"
            self.legend.set_scale(None, None, caption, diverging=kernels)
            return
        low, high = self.grid.value_range(index)
        if index is None:
            caption = f"{what}: one scale for the whole layer"
        else:
            caption = f"{'kernel' if kernels else 'map'} {index}: {what} range"
        self.legend.set_scale(low, high, caption, diverging=kernels)

    def _on_hover(self, index: int, row: int, col: int) -> None:
        self._legend_for(index)
        predictor = self.predictors.get(self.active) if self.active else None
        if predictor is None or self._layer == KERNELS:
            return
        box = predictor.receptive_field(self._layer, row, col)
        self.input_view.set_highlight(box)
        if box is None:
            self.rf_label.setText("Receptive field unknown for this layer.")
            return
        top, left, bottom, right = box
        self.rf_label.setText(
            f"Map {index}, unit ({row}, {col}) sees input rows {top}–{bottom}, columns {left}–{right} "
            f"({bottom - top + 1} × {right - left + 1} px)."
        )

    def _on_unhover(self) -> None:
        self.input_view.set_highlight(None)
        self.rf_label.setText("Hover a feature map to see a unit's receptive field here.")
        if self.grid.count:
            self._legend_for(None)

    # ---- files ---------------------------------------------------------------------------------
    def open_image(self, path: str | Path) -> bool:
        """Put an image file on the canvas (then it is preprocessed like a drawing)."""
        try:
            ink = load_image_file(path)
        except ImageFileError as err:
            self._show_banner(f"Could not open the image: {err}", error=True)
            return False
        self._hide_banner()
        self.canvas.set_picture(ink)
        self.status.showMessage(f"Opened {path}")
        return True

    def save_drawing(self, path: str | Path) -> bool:
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        if not self.canvas.image().save(str(path), "PNG"):
            self._show_banner(f"Could not save the drawing to {path}", error=True)
            return False
        self.status.showMessage(f"Saved {path}")
        return True

    def _open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open an image of a digit", "", "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp);;All files (*)"
        )
        if path:
            self.open_image(path)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the drawing", "digit.png", "PNG images (*.png)")
        if path:
            self.save_drawing(path)

    # ---- messages ------------------------------------------------------------------------------
    def _set_state(self, state: str, html: str) -> None:
        self.state = state
        self.message = html
        self.state_label.setText(html)
        self.result_stack.setCurrentIndex(1)

    def _show_banner(self, text: str, error: bool) -> None:
        self.message = text
        self.banner.setText(text)
        self.banner.setProperty("level", "error" if error else "warning")
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)
        self.banner.show()

    def _hide_banner(self) -> None:
        self.banner.hide()

    def closeEvent(self, event) -> None:
        self._live.stop()
        self.inference.shutdown()
        super().closeEvent(event)


def _short(name: str) -> str:
    """Layer names without the wrapper's ``net.`` prefix."""
    return name[4:] if name.startswith("net.") else name


def brief(message: str, limit: int = 260) -> str:
    """An error without the paragraphs of advice torch appends to its own: the first line, up to
    a long parenthesis (the quoted library error), at most ``limit`` characters."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()] or [message]
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict:" then the error
        first = f"{first} {lines[1]}"
    start = first.find(" (")
    if start > 0:
        end = first.find(")", start)
        if (end if end > 0 else len(first)) - start > 80:
            first = first[:start]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
QPushButton { padding: 5px 12px; }
"""


def apply_style(app: QApplication) -> None:
    app.setStyle("Fusion")
    font = QFont(app.font())
    font.setPointSizeF(max(font.pointSizeF(), 9.5))
    app.setFont(font)
    app.setStyleSheet(STYLE)


__all__ = ["MainWindow", "ModelEntry", "apply_style", "find_entries"]
