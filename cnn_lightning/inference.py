"""Using a trained net on images: prediction and feature maps. No Qt here: the app's widgets
(``gui/``) and scripts both build on this module.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnn_lightning import attribution, explain, knowledge
from cnn_lightning.checkpoints import CheckpointError, RunRecord, load_model, read_checkpoint
from cnn_lightning.geometry import receptive_fields
from cnn_lightning.images import MNIST_SIZE, preprocess

UNSURE_BELOW = 0.6  # a top probability under this is shown as "not sure"

# The layers whose outputs are shown as feature maps: convolutions, activations, pools.
ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)
FEATURE_LAYERS = (
    nn.Conv2d, *ACTIVATIONS,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.LocalResponseNorm,
)


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor,
                 vectors: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``images``; return (logits, {layer name: output (N, C, H, W)}).

    Names are the modules' qualified names (e.g. ``net.features.conv1.relu``), in forward order.
    Outputs are copied as they are produced, so an in-place layer after them cannot alter them.
    Given a dict, ``vectors`` receives the (N, F) outputs of the dense layers and their activations.
    """
    maps: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            if output.dim() == 4:
                maps[name] = output.detach().clone()
            elif output.dim() == 2 and vectors is not None:
                vectors[name] = output.detach().clone()
        return hook

    kinds = FEATURE_LAYERS + ((nn.Linear,) if vectors is not None else ())
    handles = [
        module.register_forward_hook(keep(name))
        for name, module in model.named_modules()
        if isinstance(module, kinds)
    ]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps


@dataclass(frozen=True)
class Prediction:
    """One image through one net."""

    probabilities: np.ndarray  # (10,), sums to 1
    input: np.ndarray  # (28, 28) float32 in [0, 1]: what the net saw
    maps: dict[str, np.ndarray] = field(repr=False)  # layer name -> (C, H, W) float32
    model_ms: float = 0.0  # forward pass with feature capture
    vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # dense layer -> (F,)

    @property
    def label(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())

    @property
    def uncertain(self) -> bool:
        return self.confidence < UNSURE_BELOW


class Predictor:
    """A loaded net with what the app shows about it; ``predict`` is safe to call from any thread."""

    def __init__(self, model: nn.Module, name: str = "", checkpoint: Path | None = None,
                 record: RunRecord | None = None):
        self.model = model.eval()
        self.name = name or type(getattr(model, "net", model)).__name__
        self.checkpoint = checkpoint
        self.record = record
        self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.geometry = receptive_fields(model)
        _, maps = feature_maps(model, torch.zeros(1, 1, MNIST_SIZE, MNIST_SIZE))
        self.layers = list(maps)  # feature-map layer names, in forward order
        modules = dict(model.named_modules())
        self.activations = [name for name in self.layers if isinstance(modules[name], ACTIVATIONS)]
        self.shapes = {name: tuple(m.shape[1:]) for name, m in maps.items()}
        # forward hooks are per module: two threads running the same net would see each other's
        self._lock = threading.Lock()
        # explanations run on their own copy, so a slow saliency never holds up live prediction
        self._explainer = copy.deepcopy(self.model)
        self._explain_lock = threading.Lock()
        # the novelty detector and neighbour index: a copy of its own, fitted on first use
        self._explainer_for_knowledge = copy.deepcopy(self.model)
        self._knowledge_lock = threading.RLock()
        self._knowledge: knowledge.Knowledge | None = None
        self._train_images: np.ndarray | None = None
        self.data_dir: Path | None = None  # MNIST's folder; None: the project's data/

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, name: str = "", record: RunRecord | None = None) -> Predictor:
        """Raises ``CheckpointError`` (a ValueError) naming the file and what is wrong with it."""
        path = Path(path)
        return cls(load_model(path), name=name, checkpoint=path, record=record)

    @property
    def architecture(self) -> str:
        return type(getattr(self.model, "net", self.model)).__name__

    def predict(self, image) -> Prediction:
        """Preprocess any 2-D image (see ``preprocess``) and predict; ``EmptyImageError`` if blank."""
        return self.predict_input(preprocess(image))

    def predict_input(self, x: torch.Tensor) -> Prediction:
        """Predict an already preprocessed (1, 28, 28) image."""
        with self._lock:
            started = time.perf_counter()
            vectors: dict[str, torch.Tensor] = {}
            logits, maps = feature_maps(self.model, x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE), vectors)
            probabilities = torch.softmax(logits[0].double(), dim=0)
            elapsed = (time.perf_counter() - started) * 1000
        return Prediction(
            probabilities=probabilities.numpy(),
            input=x.reshape(MNIST_SIZE, MNIST_SIZE).numpy(),
            maps={name: m[0].numpy() for name, m in maps.items()},
            model_ms=elapsed,
            vectors={name: v[0].numpy() for name, v in vectors.items()},
        )

    def receptive_field(self, layer: str, row: int, col: int) -> tuple[int, int, int, int] | None:
        """The input pixels (top, left, bottom, right; inclusive) that unit (row, col) of ``layer``
        depends on, or None when unknown."""
        geometry = self.geometry.get(layer)
        return geometry.field(row, col) if geometry is not None else None

    def explain_unit(self, x: torch.Tensor, layer: str, channel: int, row: int, col: int) -> explain.UnitExplanation:
        """How unit (channel, row, col) of conv ``layer`` was computed from ``x`` (1, 28, 28); see
        ``explain.explain_unit``. A pointwise layer right after a conv stands for that conv."""
        with self._explain_lock:
            unit = explain.explain_unit(self._explainer, x, layer, channel, row, col)
        return dataclasses.replace(unit, field=self.receptive_field(unit.layer, row, col))

    def saliency(self, x: torch.Tensor, method: str = "occlusion") -> np.ndarray:
        """(28, 28) float32: how much each pixel of ``x`` drove the predicted class."""
        with self._explain_lock:
            return attribution.saliency(self._explainer, x, method)

    def smallest_flip(self, x: torch.Tensor) -> attribution.Flip | None:
        """The smallest L2 change of ``x`` found that makes the net read another digit (see
        ``attribution.smallest_flip``); None when none within its largest radius."""
        with self._explain_lock:
            return attribution.smallest_flip(self._explainer, x)

    # ---- what it knows of its training digits (``knowledge``) ------------------------------

    def fitted_knowledge(self) -> knowledge.Knowledge:
        """The fitted novelty detector and neighbour index: from the cache beside the checkpoint,
        else fitted (seconds; call it off the GUI thread) and cached."""
        with self._knowledge_lock:
            if self._knowledge is None:
                self._knowledge = knowledge.load_or_fit(self._explainer_for_knowledge, self.checkpoint,
                                                        self.data_dir, self._split())
            return self._knowledge

    def _split(self) -> tuple[int, int]:
        """The run's (val_size, split_seed), from the checkpoint; the defaults without one."""
        val_size, seed = 5_000, 12345
        if self.checkpoint is not None:
            try:
                data = read_checkpoint(self.checkpoint).get("datamodule_hyper_parameters")
            except CheckpointError:
                data = None
            if isinstance(data, dict):
                v, s = data.get("val_size", val_size), data.get("split_seed", seed)
                if type(v) is int and type(s) is int and 0 < v < knowledge.TRAIN_SIZE:
                    val_size, seed = v, s
        return val_size, seed

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._knowledge_lock:
            return knowledge.logits_and_features(self._explainer_for_knowledge, x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE))

    def novelty(self, x: torch.Tensor) -> knowledge.Novelty:
        """How unlike the training digits ``x`` is: ``.score`` (higher: less like them) and
        ``.is_digit`` (the score within what 95% of validation digits reach)."""
        fit = self.fitted_knowledge()
        return fit.novelty(*self._features(x))

    def neighbours(self, x: torch.Tensor, k: int = 8) -> list[knowledge.Neighbour]:
        """The ``k`` training digits nearest to ``x`` in the net's penultimate features (cosine),
        most similar first."""
        fit = self.fitted_knowledge()
        _, features = self._features(x)
        similarities, rows = fit.nearest(features, k)
        images, _ = knowledge.read_mnist_train(self.data_dir) if self._train_images is None else (self._train_images, None)
        self._train_images = images
        out = []
        for similarity, row in zip(similarities.tolist(), rows.tolist(), strict=True):
            index = int(fit.indices[row])
            out.append(knowledge.Neighbour(index=index, label=int(fit.labels[row]), similarity=float(similarity),
                                           image=np.array(images[index])))
        return out

    def probe(self, x: torch.Tensor, kind: str, values) -> np.ndarray:
        """(len(values), 10) class probabilities of ``x`` shifted, rotated or thickened by each value
        (``kind``: shift_x, shift_y, rotate, thickness)."""
        with self._explain_lock:
            return explain.probe(self._explainer, x, kind, values)

    def first_conv_kernels(self) -> tuple[str, np.ndarray] | None:
        """(layer name, weights (out channels, k, k)) of the first convolution on the input."""
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Conv2d):
                weights = module.weight.detach().float()
                return name, weights.mean(dim=1).numpy()  # one input channel: the mean is that channel
        return None
