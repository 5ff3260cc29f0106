"""The main window: a thin composition of panels (gui/*.py, one widget each), wired by signals.

It owns the state that spans panels (the model in use, the latest outcome), the worker thread,
the menus and shortcuts, and the messages. A new view of the model in use is a panel module with
``set_model(predictor, prediction=None)`` (a new net, or None) and ``set_prediction(prediction)``
(a new drawing's prediction, or None): build and place it in ``_build``, connect its signals, and
append it to ``self.views``; the window then feeds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QMainWindow, QVBoxLayout, QWidget

from cnn_lightning.config import project_root
from cnn_lightning.inference import Prediction, Predictor
from gui.banner import Banner
from gui.comparison import ComparisonRow
from gui.draw_panel import DrawPanel
from gui.explain_panel import ExplainPanel, RightColumn
from gui.feature_maps import FeatureMapPanel
from gui.input_view import InputPanel
from gui.messages import checkpoint_gone_text, load_error_text, no_model_text, still_using_text
from gui.model_picker import ModelPicker
from gui.models import CheckpointWatcher, Models
from gui.probabilities import PredictionPanel
from gui.style import scrollable
from gui.worker import Inference, Outcome

log = logging.getLogger(__name__)

MINIMUM_SIZE = (1024, 640)  # below what the panels need the window scrolls (a 1280x720 laptop)


class MainWindow(QMainWindow):
    predictionShown = Signal(object)  # the Outcome the views now show
    modelReady = Signal(str)  # key of the model now in use
    modelFailed = Signal(str, str)  # key, message
    # The models' state lives in ``self.models``; tests and scripts read it here.
    entries = property(lambda self: self.models.entries)
    predictors = property(lambda self: self.models.predictors)
    failures = property(lambda self: self.models.failures)

    def __init__(self, outputs_root: str | Path | None = None, checkpoint: str | Path | None = None,
                 canvas_size: int = 320):
        super().__init__()
        self.setWindowTitle("cnn-lightning — draw a digit")
        self.outputs_root = Path(outputs_root) if outputs_root else Path(project_root()) / "outputs"
        self.checkpoint_arg = Path(checkpoint).expanduser() if checkpoint else None
        self.current: str | None = None  # the switcher's choice
        self.active: str | None = None  # the loaded model in use (the choice, once it has loaded)
        self.state = "starting"
        self.message = ""
        self.last_outcome: Outcome | None = None

        self.inference = Inference(self)
        self.inference.finished.connect(self._on_outcome)
        self.models = Models(self.inference, self.outputs_root, self.checkpoint_arg, self)
        self.models.loaded.connect(self._on_loaded)
        self.models.failed.connect(self._on_load_failed)

        self._watcher = CheckpointWatcher(self)
        self._watcher.gone.connect(self._on_checkpoint_gone)

        self._build(canvas_size)
        self._show_model(None)  # the views' placeholders until a model is in use
        self.refresh_models()

    # ---- layout ------------------------------------------------------------------------------
    def _build(self, canvas_size: int) -> None:
        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(12, 10, 12, 10)
        root.setSpacing(10)

        self.picker = ModelPicker()
        self.picker.chosen.connect(self.select_model)
        self.picker.refreshRequested.connect(self.refresh_models)
        self.picker.compareToggled.connect(self.set_compare)
        root.addWidget(self.picker)

        self.banner = Banner()
        root.addWidget(self.banner)

        columns = QHBoxLayout()
        columns.setSpacing(10)
        root.addLayout(columns, 1)

        self.drawing = DrawPanel(canvas_size)  # left: the canvas and its tools
        self.drawing.drawingChanged.connect(self.request_prediction)
        self.drawing.opened.connect(self._on_opened)
        self.drawing.saved.connect(lambda path: self.status.showMessage(f"Saved {path}"))
        self.drawing.fileFailed.connect(lambda message: self._show_banner(message, error=True))
        columns.addWidget(self.drawing)

        middle_column = QWidget()  # middle: what the model sees, and what it says
        middle = QVBoxLayout(middle_column)
        middle.setContentsMargins(0, 0, 0, 0)
        middle.setSpacing(10)
        self.input_panel = InputPanel(scale=7)
        middle.addWidget(self.input_panel)
        self.prediction_panel = PredictionPanel()
        middle.addWidget(self.prediction_panel, 1)
        middle_column.setFixedWidth(300)  # the same in every state, whatever the messages say
        columns.addWidget(middle_column)

        self.feature_maps = FeatureMapPanel()  # right: every layer's maps
        self.feature_maps.unitHovered.connect(self.input_panel.show_field)
        self.feature_maps.unhovered.connect(self.input_panel.clear_field)
        self.explain = ExplainPanel()  # or: every layer at once, one unit, saliency, probes
        self.explain.field_selected.connect(self.input_panel.view.set_highlight)
        self.right_column = RightColumn(self.feature_maps, self.explain, gives_way=middle_column)
        columns.addWidget(self.right_column, 1)
        # what the window feeds with each net and prediction
        self.views = [self.feature_maps, self.explain, self.prediction_panel.novelty]
        self.prediction_panel.novelty.shown.connect(self.prediction_panel.novelty.mirror(self.explain.verdict))

        self.comparison = ComparisonRow()  # bottom: side by side, shown on demand
        self.comparison.hide()
        root.addWidget(self.comparison)

        # The panels' widgets that tests, gui/screenshot.py and benchmarks/ drive by name.
        d, m, i, p, f = self.drawing, self.picker, self.input_panel, self.prediction_panel, self.feature_maps
        self.canvas, self.brush_slider, self.undo_button, self.clear_button = (
            d.canvas, d.brush_slider, d.undo_button, d.clear_button)
        self.model_combo, self.details, self.refresh_button, self.compare_box = (
            m.model_combo, m.details, m.refresh_button, m.compare_box)
        self.input_view, self.rf_label, self.layer_combo, self.grid, self.legend = (
            i.view, i.rf_label, f.layer_combo, f.grid, f.legend)
        self.bars, self.digit_label, self.verdict_label, self.result_stack, self.state_label = (
            p.bars, p.digit_label, p.verdict_label, p.result_stack, p.state_label)
        self.compare_frame, self.compare_cards = self.comparison, self.comparison.cards

        self.setCentralWidget(scrollable(central))  # a small screen scrolls the panels
        self.setMinimumSize(*MINIMUM_SIZE)
        self.status = self.statusBar()
        self._actions()

    def _actions(self) -> None:
        for text, keys, slot in (
            ("Undo", QKeySequence.StandardKey.Undo, self.undo),
            ("Clear", QKeySequence("Ctrl+L"), self.clear),
            ("Open image", QKeySequence.StandardKey.Open, self.drawing.open_dialog),
            ("Save PNG", QKeySequence.StandardKey.Save, self.drawing.save_dialog),
        ):
            action = QAction(text, self)
            action.setShortcut(keys)
            action.triggered.connect(slot)
            self.addAction(action)

    # ---- models ------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Scan for checkpoints again; keep the current choice when it is still there."""
        error = self.models.refresh()
        if error is not None:
            self._show_banner(f"Could not read {self.outputs_root}: {error}", error=True)
        if self.active is not None and self.active not in self.predictors:
            self.feature_maps.drop_model()  # its file changed: it loads afresh
        self.picker.set_entries(self.entries)
        self.comparison.set_entries(self.entries)
        if not self.entries:
            self.current = self.active = None
            self._watcher.watch(None)
            self.picker.show_details(None)
            self._set_state("no-model", no_model_text(self.outputs_root))
            self._show_model(None)
            self.request_prediction()
            return
        keys = [e.key for e in self.entries]
        choice = self.current if self.current in keys else keys[0]
        self.current = None
        self.select_model(choice)
        if self.compare_box.isChecked():
            self.models.load_all()

    def select_model(self, key: str) -> None:
        """Switch to model ``key`` (an entry of the switcher); loads it off the GUI thread."""
        entry = self.models.entry(key)
        if entry is None:
            return
        self.picker.show_choice(key)
        if key == self.current and key in self.predictors:
            return
        self.current = key
        self.inference.invalidate()  # a result of the previous model must not show as this one's
        if key in self.predictors:
            self._activate(key)
        else:
            self.picker.show_details(entry)
            self.status.showMessage(f"Loading {entry.name}…")
            if self.active is None:
                self._set_state("loading", f"Loading {entry.name}…")
            self.models.load(entry)

    def _on_loaded(self, key: str) -> None:
        if key == self.current:
            self._activate(key)
        elif self.compare_box.isChecked():
            self.request_prediction()

    def _on_load_failed(self, key: str, message: str) -> None:
        entry = self.models.entry(key)
        name = entry.name if entry else key
        log.warning("could not load %s: %s", name, message)
        self.status.showMessage(f"Could not load {name}")
        if key == self.current:
            if self.active is not None and self.active in self.predictors:
                # Keep using the model that works; the switcher goes back to it.
                fallback = self.models.entry(self.active)
                fallback_name = fallback.name if fallback else self.active
                self.current = None
                self.select_model(self.active)
                self._show_banner(still_using_text(name, message, fallback_name), error=True)
                self.banner.setToolTip(message)
            else:
                self.picker.show_details(entry)
                self.state_label.setToolTip(message)
                self._set_state("load-error", load_error_text(name, message))
        if self.compare_box.isChecked():
            self.comparison.show_outcome(self.models, self.last_outcome)
        self.modelFailed.emit(key, message)

    def _activate(self, key: str) -> None:
        entry = self.models.entry(key)
        predictor = self.predictors[key]
        self.active = key
        self.picker.show_details(entry, predictor)
        self._watcher.watch(entry.checkpoint)
        self.banner.hide()
        outcome = self.last_outcome
        self._show_model(predictor, outcome.predictions.get(key) if outcome else None)
        self.state = "empty-canvas" if self.canvas.is_blank() else "ready"
        self.prediction_panel.show_result()
        self.modelReady.emit(key)
        self.request_prediction()

    def _show_model(self, predictor: Predictor | None, prediction: Prediction | None = None) -> None:
        for view in self.views:
            view.set_model(predictor, prediction)

    def _on_checkpoint_gone(self, path: str) -> None:
        entry = self.models.entry(self.active)
        if entry is not None and str(entry.checkpoint) == path:
            self._show_banner(checkpoint_gone_text(path), error=False)

    # ---- comparison ----------------------------------------------------------------------------
    def set_compare(self, on: bool) -> None:
        if self.compare_box.isChecked() != on:
            self.compare_box.setChecked(on)  # re-enters through the toggled signal
            return
        self.comparison.setVisible(on)
        if on:
            self.models.load_all()
            self.comparison.show_outcome(self.models, self.last_outcome)
        self.request_prediction()

    # ---- drawing and prediction ----------------------------------------------------------------
    def undo(self) -> None:
        self.canvas.undo()

    def clear(self) -> None:
        self.canvas.clear()

    def select_layer(self, name: str) -> None:
        self.feature_maps.select_layer(name)

    def request_prediction(self) -> int:
        predictors = {}
        if self.active in self.predictors:
            predictors[self.active] = self.predictors[self.active]
        if self.compare_box.isChecked():
            predictors.update((k, p) for k, p in self.predictors.items() if self.models.entry(k))
        return self.inference.predict(self.canvas.to_array(), predictors)

    def _on_outcome(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self.input_panel.set_image(outcome.input)
        prediction = outcome.predictions.get(self.active) if self.active else None
        if self.active is not None and self.state not in ("no-model",):
            if outcome.blank:
                self.state = "empty-canvas"
                self.prediction_panel.show_blank()
                self.status.showMessage("The canvas is empty: draw a digit")
            elif prediction is not None:
                self.state = "ready"
                self.prediction_panel.show_prediction(prediction)
                self.status.showMessage(
                    f"{self.models.entry(self.active).name}: model {prediction.model_ms:.2f} ms · "
                    f"preprocessing {outcome.preprocess_ms:.2f} ms"
                )
            elif self.active in outcome.errors:
                self.state = "predict-error"
                self._show_banner(f"Prediction failed: {outcome.errors[self.active]}", error=True)
            self.prediction_panel.show_result()
        for view in self.views:
            view.set_prediction(prediction)
        if self.compare_box.isChecked():
            self.comparison.show_outcome(self.models, self.last_outcome)
        self.predictionShown.emit(outcome)

    # ---- files ---------------------------------------------------------------------------------
    def open_image(self, path: str | Path) -> bool:
        """Put an image file on the canvas (then it is preprocessed like a drawing)."""
        return self.drawing.open_image(path)

    def save_drawing(self, path: str | Path) -> bool:
        return self.drawing.save_drawing(path)

    def _on_opened(self, path: str) -> None:
        self.banner.hide()
        self.status.showMessage(f"Opened {path}")

    # ---- messages ------------------------------------------------------------------------------
    def _set_state(self, state: str, html: str) -> None:
        self.state = state
        self.message = html
        self.prediction_panel.show_message(html)

    def _show_banner(self, text: str, error: bool) -> None:
        self.message = text
        self.banner.show_text(text, error)

    def closeEvent(self, event) -> None:
        self.drawing.stop_live()
        self.inference.shutdown()
        self.explain.shutdown()
        self.prediction_panel.novelty.shutdown()
        super().closeEvent(event)


__all__ = ["MainWindow"]
