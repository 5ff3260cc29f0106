"""What a net knows of its training digits: a novelty detector ("this doesn't look like a digit")
and the training digits nearest to a drawing, both in the net's penultimate feature space. No Qt.

``fit_knowledge`` runs the training split (55,000 images) and the validation split through the
net once: the training features become a cosine index (float16) and the class means and shared
covariance of the Mahalanobis detector; the validation digits set each detector's threshold so
that 95% of them pass. The detector kept is the one that best separates the validation digits
from non-digits the project makes (``nondigits``, seed ``SELECTION_SEED``, the first six fonts;
the checks use other seeds): the one flagging the most of them at its 95% threshold.
``load_or_fit`` caches the fit beside the checkpoint, keyed by the checkpoint's size, mtime and
SHA-256, and treats the cache as untrusted on read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnn_lightning.config import project_root
from cnn_lightning.mnist_files import prepare_mnist, raw_dir

DETECTORS = ("max_softmax", "energy", "mahalanobis", "knn")
PASS_RATE = 0.95  # of validation digits under each detector's threshold
KNN_K = 10  # the knn detector's score: cosine distance to the k-th nearest training feature
SELECTION_SEED = 1000
CACHE_VERSION = 2  # 2: the detector kept is the one flagging the most non-digits
CACHE_SUFFIX = ".knowledge.pt"
MAX_CACHE_BYTES = 512 * 2**20
MAX_FEATURES = 4096
TRAIN_SIZE = 60_000


class KnowledgeError(ValueError):
    """A cached fit that cannot be used (corrupt, foreign, of another checkpoint)."""


@dataclass(frozen=True)
class Novelty:
    score: float  # higher: less like the training digits
    threshold: float  # scores above it are flagged
    detector: str

    @property
    def is_digit(self) -> bool:
        return self.score <= self.threshold


@dataclass(frozen=True)
class Neighbour:
    index: int  # into torchvision's 60,000 MNIST training images, in file order
    label: int
    similarity: float  # cosine, in the net's penultimate features
    image: np.ndarray  # (28, 28) uint8


def final_layer(model: nn.Module) -> nn.Module:
    """The last layer with weights (the classifier): its input is the penultimate feature."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ValueError("the net has no linear or conv layer")
    return layers[-1]


@torch.no_grad()
def logits_and_features(model: nn.Module, images: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, 10), penultimate features (N, F)) of float images (N, 1, 28, 28) in [0, 1]."""
    captured: list[torch.Tensor] = []
    handle = final_layer(model).register_forward_pre_hook(lambda m, args: captured.append(args[0].flatten(1).clone()))
    logits = []
    try:
        for chunk in images.split(batch):
            logits.append(model(chunk.float()))
    finally:
        handle.remove()
    return torch.cat(logits).float(), torch.cat(captured).float()


def _normalised(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def read_mnist_train(data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 training images (uint8, memory-mapped) and labels, checked against MNIST's checksums."""
    root = Path(data_dir) if data_dir is not None else Path(project_root()) / "data"
    prepare_mnist(root, download=False)
    raw = raw_dir(root)
    images = np.memmap(raw / "train-images-idx3-ubyte", dtype=np.uint8, mode="r", offset=16, shape=(TRAIN_SIZE, 28, 28))
    labels = np.fromfile(raw / "train-labels-idx1-ubyte", dtype=np.uint8, offset=8).astype(np.int64)
    return images, labels


def split_indices(val_size: int = 5_000, split_seed: int = 12345) -> tuple[torch.Tensor, torch.Tensor]:
    """The data module's (train, val) split of the 60,000 (``MNISTDataModule.split_indices``)."""
    from cnn_lightning.data import MNISTDataModule  # Lightning: only when fitting

    return MNISTDataModule(data_dir="", val_size=val_size, split_seed=split_seed).split_indices()


def auroc(inliers: np.ndarray, outliers: np.ndarray) -> float:
    """P(an outlier scores above an inlier), ties counting half: the ROC curve's area."""
    scores = np.concatenate([inliers, outliers])
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(sorted_scores):  # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    n_in, n_out = len(inliers), len(outliers)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


@dataclass
class Knowledge:
    """A fitted detector and neighbour index of one checkpoint (see the module's doc)."""

    features: torch.Tensor  # (N, F) float16, unit length: the training split's
    indices: torch.Tensor  # (N,) int64 into the 60,000
    labels: torch.Tensor  # (N,) int64
    means: torch.Tensor  # (10, F) float32, class means of the raw features
    precision: torch.Tensor  # (F, F) float32, inverse of the shared covariance
    thresholds: torch.Tensor  # (len(DETECTORS),) float32
    aurocs: torch.Tensor  # (len(DETECTORS),) float32: validation digits against SELECTION_SEED's non-digits
    detector: str = "mahalanobis"
    key: str = ""

    def __post_init__(self) -> None:
        self._index = self.features.float()  # float32 for queries: 55,000 x F

    def scores(self, logits: torch.Tensor, features: torch.Tensor, detector: str | None = None,
               chunk: int = 512) -> torch.Tensor:
        """(N,) novelty scores of ``detector`` (default: the one kept); higher: less digit-like."""
        detector = detector or self.detector
        if detector == "max_softmax":
            return -torch.softmax(logits, dim=1).max(dim=1).values
        if detector == "energy":
            return -torch.logsumexp(logits, dim=1)
        if detector == "mahalanobis":
            diff = features[:, None, :] - self.means[None]  # (N, 10, F)
            return torch.einsum("ncf,fg,ncg->nc", diff, self.precision, diff).min(dim=1).values
        if detector == "knn":
            out = []
            for part in _normalised(features).split(chunk):
                similarity = part @ self._index.T
                out.append(1 - similarity.topk(KNN_K, dim=1).values[:, -1])
            return torch.cat(out)
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")

    def threshold(self, detector: str | None = None) -> float:
        return float(self.thresholds[DETECTORS.index(detector or self.detector)])

    def novelty(self, logits: torch.Tensor, features: torch.Tensor) -> Novelty:
        score = float(self.scores(logits[:1], features[:1])[0])
        return Novelty(score=score, threshold=self.threshold(), detector=self.detector)

    def nearest(self, features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities, rows of the index), most similar first, for one feature vector."""
        similarity = _normalised(features[:1].float()) @ self._index.T
        values, rows = similarity[0].topk(min(k, len(self._index)))
        values = values.clamp(-1.0, 1.0)  # float16 rounding of the index can overshoot 1
        return values, rows

    # ---- the cache -----------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "version": CACHE_VERSION, "key": self.key, "detector": self.detector,
            "features": self.features, "indices": self.indices, "labels": self.labels, "means": self.means,
            "precision": self.precision, "thresholds": self.thresholds, "aurocs": self.aurocs,
        }

    @classmethod
    def from_state(cls, state: object, key: str) -> Knowledge:
        """A fit from an untrusted ``state``: every field's type, shape, dtype and values checked."""
        if not isinstance(state, dict):
            raise KnowledgeError("not a dict")
        if state.get("version") != CACHE_VERSION or state.get("key") != key:
            raise KnowledgeError("of another version or another checkpoint")
        if state.get("detector") not in DETECTORS:
            raise KnowledgeError(f"unknown detector {state.get('detector')!r}")
        tensors = {}
        specs = {"features": torch.float16, "indices": torch.int64, "labels": torch.int64, "means": torch.float32,
                 "precision": torch.float32, "thresholds": torch.float32, "aurocs": torch.float32}
        for name, dtype in specs.items():
            value = state.get(name)
            if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.layout != torch.strided:
                raise KnowledgeError(f"{name} is not a {dtype} tensor")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise KnowledgeError(f"{name} holds NaN or infinite values")
            tensors[name] = value.contiguous()
        n, f = tensors["features"].shape if tensors["features"].dim() == 2 else (0, 0)
        if not (0 < n <= TRAIN_SIZE and 0 < f <= MAX_FEATURES):
            raise KnowledgeError(f"features of shape {tuple(tensors['features'].shape)}")
        shapes = {"indices": (n,), "labels": (n,), "means": (10, f), "precision": (f, f),
                  "thresholds": (len(DETECTORS),), "aurocs": (len(DETECTORS),)}
        for name, shape in shapes.items():
            if tuple(tensors[name].shape) != shape:
                raise KnowledgeError(f"{name} has shape {tuple(tensors[name].shape)}, expected {shape}")
        indices, labels = tensors["indices"], tensors["labels"]
        if indices.min() < 0 or indices.max() >= TRAIN_SIZE or len(indices.unique()) != n:
            raise KnowledgeError("indices outside the 60,000 training images or repeated")
        if labels.min() < 0 or labels.max() > 9:
            raise KnowledgeError("labels outside 0-9")
        return cls(**tensors, detector=state["detector"], key=key)


def fit_knowledge(model: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                  train_idx: torch.Tensor, val_idx: torch.Tensor, key: str = "") -> Knowledge:
    """Fit the detectors and the index on ``model`` (eval mode; takes [0, 1] images)."""
    from cnn_lightning.nondigits import make_nondigits

    def batch(idx: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(train_images[idx.numpy()], dtype=np.float32) / 255.0)[:, None]

    model = model.eval()
    logits, features = logits_and_features(model, batch(train_idx))
    labels = torch.from_numpy(np.asarray(train_labels)[train_idx.numpy()]).long()
    means = torch.stack([features[labels == c].mean(dim=0) for c in range(10)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    ridge = 1e-6 * covariance.diagonal().mean().clamp_min(1e-12)
    precision = torch.linalg.pinv(covariance.double() + ridge * torch.eye(len(covariance), dtype=torch.float64))
    knowledge = Knowledge(
        features=_normalised(features).half(), indices=train_idx.long().clone(), labels=labels,
        means=means.float(), precision=precision.float(), thresholds=torch.zeros(len(DETECTORS)),
        aurocs=torch.zeros(len(DETECTORS)), key=key,
    )
    val_logits, val_features = logits_and_features(model, batch(val_idx))
    odd = make_nondigits(seed=SELECTION_SEED, per_kind=20, font_limit=6, digits=None)
    odd_logits, odd_features = logits_and_features(model, odd.images)
    caught: list[float] = []
    for i, detector in enumerate(DETECTORS):
        val_scores = knowledge.scores(val_logits, val_features, detector).numpy()
        odd_scores = knowledge.scores(odd_logits, odd_features, detector).numpy()
        knowledge.thresholds[i] = float(np.quantile(val_scores, PASS_RATE))
        knowledge.aurocs[i] = auroc(val_scores, odd_scores)
        caught.append(float((odd_scores > knowledge.thresholds[i].item()).mean()))
    # kept: the one that flags the most non-digits at its 95% threshold (ties: the higher AUROC)
    knowledge.detector = max(DETECTORS, key=lambda d: (caught[DETECTORS.index(d)], float(knowledge.aurocs[DETECTORS.index(d)])))
    return knowledge


# --------------------------------------------------------------------------------------------
# The cache beside the checkpoint


def checkpoint_key(path: str | os.PathLike) -> str:
    """size, mtime (ns) and SHA-256 of the checkpoint file."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


def cache_path(checkpoint: str | os.PathLike) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CACHE_SUFFIX)


def read_cache(path: Path, key: str) -> Knowledge:
    """The cached fit at ``path`` for the checkpoint ``key``, or ``KnowledgeError``."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise KnowledgeError(f"{path}: {err}") from None
    if size > MAX_CACHE_BYTES:
        raise KnowledgeError(f"{path}: {size:,} bytes, larger than any fit")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling or archive failure: refuse, refit
        raise KnowledgeError(f"{path}: unreadable ({type(err).__name__})") from None
    return Knowledge.from_state(state, key)


def write_cache(knowledge: Knowledge, path: Path) -> None:
    """Atomically: a temp file in the same folder, then os.replace."""
    descriptor, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as f:
            torch.save(knowledge.state(), f)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_or_fit(model: nn.Module, checkpoint: str | os.PathLike | None, data_dir: str | os.PathLike | None = None,
                split: tuple[int, int] = (5_000, 12345)) -> Knowledge:
    """The fit of ``checkpoint``'s net: read from its cache when that is valid, else fitted (and
    cached, when the folder is writable). ``split``: the run's (val_size, split_seed)."""
    key = checkpoint_key(checkpoint) if checkpoint is not None else ""
    path = cache_path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        try:
            return read_cache(path, key)
        except KnowledgeError:
            pass  # stale or damaged: fit again and replace it
    images, labels = read_mnist_train(data_dir)
    train_idx, val_idx = split_indices(*split)
    knowledge = fit_knowledge(model, images, labels, train_idx, val_idx, key=key)
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only run folder: the fit still serves this session
            write_cache(knowledge, path)
    return knowledge
