"""The models the app offers: an entry per architecture's best checkpoint (or a given file), the
nets loaded from them on the inference worker, the ones that failed, and a watch on the file in use.
No widgets here; the window shows what these report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QObject, Signal

from cnn_lightning.checkpoints import RunRecord, best_per_architecture, record_for_checkpoint
from cnn_lightning.inference import Predictor
from gui.worker import Inference


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


class Models(QObject):
    """``entries`` found by ``refresh``; ``load`` puts a net in ``predictors`` (then ``loaded(key)``)
    or its error in ``failures`` (then ``failed(key, message)``)."""

    loaded = Signal(str)
    failed = Signal(str, str)

    def __init__(self, inference: Inference, outputs_root: Path, checkpoint: Path | None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.inference = inference
        self.outputs_root, self.checkpoint = outputs_root, checkpoint
        self.entries: list[ModelEntry] = []
        self.predictors: dict[str, Predictor] = {}
        self.failures: dict[str, str] = {}
        self.loading: set[str] = set()
        inference.loaded.connect(self._on_loaded)
        inference.load_failed.connect(self._on_load_failed)

    def refresh(self) -> OSError | None:
        """Scan for checkpoints again; the error when the outputs folder cannot be read (an empty
        list then, not a crash)."""
        error = None
        try:
            self.entries = find_entries(self.outputs_root, self.checkpoint)
        except OSError as err:
            self.entries, error = [], err
        for key in list(self.predictors):  # a checkpoint re-trained in place must load afresh
            entry = self.entry(key)
            if entry is None or entry.checkpoint != self.predictors[key].checkpoint:
                self.predictors.pop(key)
        self.failures.clear()  # a file that failed may have been replaced: Refresh tries again
        return error

    def entry(self, key: str | None) -> ModelEntry | None:
        return next((e for e in self.entries if e.key == key), None)

    def load(self, entry: ModelEntry) -> None:
        if entry.key not in self.loading:
            self.loading.add(entry.key)
            self.inference.load(entry.key, entry.checkpoint, entry.record, entry.name)

    def load_all(self) -> None:
        for entry in self.entries:
            if entry.key not in self.predictors and entry.key not in self.failures:
                self.load(entry)

    def _on_loaded(self, key: str, predictor: Predictor) -> None:
        self.loading.discard(key)
        entry = self.entry(key)
        if entry is None or entry.checkpoint != predictor.checkpoint:
            return  # the list changed while it loaded
        self.predictors[key] = predictor
        self.failures.pop(key, None)
        self.loaded.emit(key)

    def _on_load_failed(self, key: str, message: str) -> None:
        self.loading.discard(key)
        self.failures[key] = message
        self.failed.emit(key, message)


class CheckpointWatcher(QObject):
    """Watches the checkpoint in use; ``gone(path)`` when it is deleted or moved."""

    gone = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_file_changed)

    def watch(self, path: Path | None) -> None:
        """Watch ``path`` alone (None: nothing)."""
        if self._watcher.files():
            self._watcher.removePaths(self._watcher.files())
        if path is not None and path.is_file():
            self._watcher.addPath(str(path))

    def _on_file_changed(self, path: str) -> None:
        if not Path(path).exists():
            self.gone.emit(path)
        else:
            self._watcher.addPath(path)  # some editors replace files: keep watching the new one
