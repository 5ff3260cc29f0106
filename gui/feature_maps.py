"""The feature-map card: a layer chooser, the chosen layer's maps (or the first conv's kernels)
for the current drawing, and their colour legend."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QWidget

from cnn_lightning.inference import Prediction, Predictor
from gui.map_grid import ColorLegend, FeatureMapGrid
from gui.style import card

KERNELS = "kernels"  # the layer chooser's entry for the first conv's weights


def short_name(name: str) -> str:
    """Layer names without the wrapper's ``net.`` prefix."""
    return name[4:] if name.startswith("net.") else name


class FeatureMapPanel(QFrame):
    """Shows ``predictor``'s maps of ``prediction`` (``set_model``, ``set_prediction``).

    Hovering a unit of a layer emits ``unitHovered(box, map, row, col)`` with the input pixels it
    sees (None when unknown); leaving it, or a new picture, emits ``unhovered``.
    """

    unitHovered = Signal(object, int, int, int)
    unhovered = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.predictor: Predictor | None = None
        self.prediction: Prediction | None = None
        self._layer: str | None = None
        maps = card(self)
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

    @property
    def layer(self) -> str | None:
        return self._layer

    def set_model(self, predictor: Predictor | None, prediction: Prediction | None = None) -> None:
        """A new net (or none): list its layers, keeping the chosen one when the net has it."""
        self.predictor, self.prediction = predictor, prediction
        previous = self._layer
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        if predictor is not None:
            for name in predictor.layers:
                shape = " × ".join(str(d) for d in predictor.shapes[name])
                self.layer_combo.addItem(f"{short_name(name)}  ({shape})", name)
            kernels = predictor.first_conv_kernels()
            if kernels is not None:
                k_name, weights = kernels
                self.layer_combo.addItem(f"{short_name(k_name)} kernels  ({weights.shape[0]} × "
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

    def drop_model(self) -> None:
        """The net was unloaded: no maps until the next ``set_model``; the layer choice stays."""
        self.predictor = self.prediction = None
        self._show_layer()

    def set_prediction(self, prediction: Prediction | None) -> None:
        self.prediction = prediction
        self._show_layer()

    def select_layer(self, name: str) -> None:
        index = self.layer_combo.findData(name)
        if index >= 0:
            self.layer_combo.setCurrentIndex(index)

    def _on_layer(self, index: int) -> None:
        self._layer = self.layer_combo.itemData(index)
        self._show_layer()

    def _show_layer(self) -> None:
        per_map = self.scale_combo.currentIndex() == 0
        predictor = self.predictor
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
        prediction = self.prediction
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
        if self.predictor is None or self._layer == KERNELS:
            return
        self.unitHovered.emit(self.predictor.receptive_field(self._layer, row, col), index, row, col)

    def _on_unhover(self) -> None:
        self.unhovered.emit()
        if self.grid.count:
            self._legend_for(None)
