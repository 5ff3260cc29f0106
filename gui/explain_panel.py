"""The app explains: the all-layers overview on top, and below it one unit's arithmetic, saliency,
the robustness probes, the smallest change that flips the digit and the training digits it is
reminded of, each a tab. The window hands it the active predictor and each new
prediction; the slow parts (saliency, probes, the unit) run on the explanation thread."""

from __future__ import annotations

import numpy as np
import torch
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from cnn_lightning import explain
from cnn_lightning.inference import Prediction, Predictor
from gui.flip import FlipPanel
from gui.jobs import Jobs
from gui.neighbours import NeighboursPanel
from gui.overview import NetworkOverview
from gui.probes import ProbePanel
from gui.saliency import SaliencyPanel
from gui.style import scrollable
from gui.unit_view import UnitPanel

OVERVIEW_HEIGHT = 240
TABS = ("unit", "saliency", "probes", "flip", "neighbours")


def _probe_all(predictor: Predictor, x: torch.Tensor) -> dict[str, np.ndarray]:
    return {kind: predictor.probe(x, kind, explain.PROBE_RANGES[kind]) for kind in explain.PROBES}


class ExplainPanel(QWidget):
    """A view of the model in use (see gui/window.py): ``set_model`` when the net changes,
    ``set_prediction`` with every new drawing's prediction."""

    field_selected = Signal(object)  # the clicked unit's receptive field (top, left, bottom, right) or None

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.jobs = Jobs(self)
        self.jobs.finished.connect(self._on_result)
        self.jobs.failed.connect(self._on_failed)
        self._predictor: Predictor | None = None
        self._prediction: Prediction | None = None
        self._unit: tuple[str, int, int, int] | None = None
        self._stale: set[str] = set()  # tabs whose result no longer matches the drawing

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.overview = NetworkOverview()
        self.overview.unit_clicked.connect(self.select_unit)
        self.overview_scroll = QScrollArea()
        self.overview_scroll.setWidget(self.overview)
        self.overview_scroll.setWidgetResizable(True)
        self.overview_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.overview_scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.overview_scroll.setFixedHeight(OVERVIEW_HEIGHT)
        layout.addWidget(self.overview_scroll)
        self.verdict = QLabel()  # the novelty verdict, here too: the prediction column gives way to this tab
        self.verdict.setProperty("role", "novelty")
        self.verdict.setWordWrap(True)
        self.verdict.hide()
        layout.addWidget(self.verdict)

        self.tabs = QTabWidget()
        self.unit_panel = UnitPanel()
        self.saliency = SaliencyPanel()
        self.probes = ProbePanel()
        self.flip = FlipPanel()
        self.neighbours = NeighboursPanel()
        # each page scrolls on its own: a long equation or wrapped summary never makes the
        # whole window taller than a laptop screen
        self.tabs.addTab(scrollable(self.unit_panel), "One unit's arithmetic")
        self.tabs.addTab(scrollable(self.saliency), "Saliency")
        self.tabs.addTab(scrollable(self.probes), "Robustness")
        self.tabs.addTab(scrollable(self.flip), "Smallest flip")
        self.tabs.addTab(scrollable(self.neighbours), "Reminds it of")
        self.tabs.currentChanged.connect(lambda _: self._refresh_visible())
        self.saliency.method_changed.connect(lambda _: self._mark_stale("saliency"))
        layout.addWidget(self.tabs, 1)

    # ---- inputs from the window ------------------------------------------------------------

    def set_model(self, predictor: Predictor | None, prediction: Prediction | None = None) -> None:
        self.set_predictor(predictor)
        if predictor is not None and prediction is not None:
            self.set_prediction(prediction)

    def set_predictor(self, predictor: Predictor | None) -> None:
        self._predictor = predictor
        self._prediction = None
        self._unit = None
        for topic in TABS:
            self.jobs.cancel(topic)
        if predictor is None:
            self.overview.set_stages([], set())
        else:
            stages = explain.overview_stages(predictor.model)
            clickable = {name for name, _ in stages if explain.conv_feeding(predictor.model, name)}
            self.overview.set_stages(stages, clickable)
        self.overview.set_prediction(None)
        self.unit_panel.set_unit(None)
        self._clear_views()
        self.field_selected.emit(None)

    def set_prediction(self, prediction: Prediction | None) -> None:
        """A new drawing's prediction by the active predictor, or None for a blank drawing."""
        self._prediction = prediction
        self.overview.set_prediction(prediction)
        if prediction is None:
            for topic in TABS:
                self.jobs.cancel(topic)
            self._clear_views()
            if self._unit is not None:
                self.unit_panel.set_message("Draw a digit: the unit's numbers follow the drawing.")
            self._stale.clear()
            return
        self._stale = set(TABS)
        self._refresh_visible()

    def select_unit(self, layer: str, channel: int, row: int, col: int) -> None:
        """Explain one unit (a conv, or the activation map right after one)."""
        self._unit = (layer, channel, row, col)
        self.tabs.setCurrentIndex(TABS.index("unit"))
        self._stale.add("unit")
        self._refresh_visible()

    def _clear_views(self) -> None:
        self.saliency.clear()
        self.probes.clear()
        self.flip.clear()
        self.neighbours.clear()

    @property
    def x(self) -> torch.Tensor | None:
        return None if self._prediction is None else torch.from_numpy(np.array(self._prediction.input))[None]

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._refresh_visible()

    # ---- jobs ------------------------------------------------------------------------------

    def _mark_stale(self, topic: str) -> None:
        self._stale.add(topic)
        self._refresh_visible()

    def _refresh_visible(self) -> None:
        """Compute what the visible tab shows, when it no longer matches the drawing; hidden
        tabs wait until they are shown, so drawing pays only for what is on screen."""
        predictor, x = self._predictor, self.x
        if predictor is None or x is None or not self.isVisible():
            return  # a hidden Explain tab costs nothing while drawing; showEvent catches up
        topic = TABS[self.tabs.currentIndex()]
        if topic not in self._stale:
            return
        self._stale.discard(topic)
        if topic == "unit":
            if self._unit is not None:
                layer, channel, row, col = self._unit
                self.jobs.submit("unit", lambda: predictor.explain_unit(x, layer, channel, row, col))
        elif topic == "saliency":
            method, label = self.saliency.current_method, self._prediction.label
            self.saliency.set_busy()
            self.jobs.submit("saliency", lambda: (method, label, x[0].numpy(), predictor.saliency(x, method)))
        elif topic == "probes":
            self.probes.set_busy()
            self.jobs.submit("probes", lambda: _probe_all(predictor, x))
        elif topic == "flip":
            self.flip.set_busy()
            self.jobs.submit("flip", lambda: (x[0].numpy(), predictor.smallest_flip(x)))
        else:
            label = self._prediction.label
            self.neighbours.set_busy()
            self.jobs.submit("neighbours", lambda: (label, predictor.neighbours(x, k=8)))

    def _on_result(self, topic: str, result) -> None:
        if topic == "unit":
            self.unit_panel.set_unit(result)
            self.overview.select(self._unit, result.field)
            self.field_selected.emit(result.field)
        elif topic == "saliency":
            self.saliency.set_result(*result)
        elif topic == "probes":
            self.probes.set_results(result)
        elif topic == "flip":
            self.flip.set_result(*result)
        elif topic == "neighbours":
            self.neighbours.set_result(*result)

    def _on_failed(self, topic: str, message: str) -> None:
        text = f"Could not compute this: {message}"
        if topic == "unit":
            self.unit_panel.set_message(text)
        elif topic == "saliency":
            self.saliency.clear(text)
        elif topic == "probes":
            self.probes.set_message(text)
        elif topic == "flip":
            self.flip.clear(text)
        else:
            self.neighbours.clear(text)

    def shutdown(self) -> None:
        self.jobs.shutdown()


class RightColumn(QTabWidget):
    """The window's right column: the feature maps, or the explanations. While Explain is shown
    the ``gives_way`` widget (the middle column) hides: the overview has its own input and
    probabilities, and needs the width."""

    def __init__(self, feature_maps: QWidget, explain: ExplainPanel, gives_way: QWidget):
        super().__init__()
        self.explain, self._gives_way = explain, gives_way
        self.addTab(feature_maps, "Feature maps")
        self.addTab(explain, "Explain")
        self.currentChanged.connect(lambda _: gives_way.setVisible(not self.explaining))

    @property
    def explaining(self) -> bool:
        return self.currentWidget() is self.explain

    def show_explain(self, on: bool) -> None:
        self.setCurrentIndex(1 if on else 0)
