"""Inference off the GUI thread: one worker QThread loads checkpoints and runs the nets.

The GUI thread only posts requests (queued signals) and receives results (queued signals back).
Every prediction request carries an id; the worker skips requests that a newer one has replaced
before it started them, and the GUI drops any result that is not the newest, so a slow result
can never overwrite a fresher drawing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QObject, QThread, Signal, Slot

from cnn_lightning.checkpoints import CheckpointError, RunRecord
from cnn_lightning.images import EmptyImageError, preprocess
from cnn_lightning.inference import Prediction, Predictor

log = logging.getLogger(__name__)


def stop_thread(thread: QThread | None) -> None:
    """Let ``thread`` finish the job it is running, then stop it. Idempotent."""
    try:
        if thread is not None and thread.isRunning():
            thread.quit()
            thread.wait()
    except RuntimeError:  # at interpreter exit Qt may have deleted it already: nothing runs
        pass


@dataclass
class Outcome:
    """What one request produced: the preprocessed input and each net's prediction (or error)."""

    request: int
    input: np.ndarray | None = None  # None: the drawing is blank
    predictions: dict[str, Prediction] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    preprocess_ms: float = 0.0

    @property
    def blank(self) -> bool:
        return self.input is None


class _Worker(QObject):
    """Lives in the worker thread: its slots run there, one at a time, in order."""

    loaded = Signal(str, object)  # key, Predictor
    load_failed = Signal(str, str)  # key, message
    done = Signal(object)  # Outcome

    def __init__(self):
        super().__init__()
        self.latest = 0  # written by the GUI thread; reading an int is atomic under the GIL

    @Slot(str, str, object, str)
    def load(self, key: str, path: str, record: object, name: str) -> None:
        try:
            predictor = Predictor.from_checkpoint(path, name=name, record=record)
        except CheckpointError as err:
            self.load_failed.emit(key, str(err))
        except Exception as err:  # a net this app does not understand: report it, keep running
            self.load_failed.emit(key, f"{path}: could not be used ({type(err).__name__}: {err})")
        else:
            self.loaded.emit(key, predictor)

    @Slot(int, object, object)
    def predict(self, request: int, image: np.ndarray, predictors: dict) -> None:
        if request != self.latest:
            return  # replaced by a newer drawing before we got to it
        outcome = Outcome(request)
        started = time.perf_counter()
        try:
            x = preprocess(image)
        except EmptyImageError:
            self.done.emit(outcome)
            return
        except Exception as err:
            outcome.errors[""] = f"preprocessing failed: {type(err).__name__}: {err}"
            self.done.emit(outcome)
            return
        outcome.preprocess_ms = (time.perf_counter() - started) * 1000
        outcome.input = x[0].numpy()
        for key, predictor in predictors.items():
            try:
                outcome.predictions[key] = predictor.predict_input(x)
            except Exception as err:  # shown in the window; the app keeps running
                log.exception("prediction with %s failed", key)
                outcome.errors[key] = f"{type(err).__name__}: {err}"
        self.done.emit(outcome)


class Inference(QObject):
    """The GUI thread's handle on the worker thread."""

    loaded = Signal(str, object)
    load_failed = Signal(str, str)
    finished = Signal(object)  # the newest Outcome only

    _load = Signal(str, str, object, str)
    _predict = Signal(int, object, object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        # One image at a time through a small net is fastest on one thread, and it leaves the
        # other cores to the GUI (and on a busy machine avoids threads waiting on each other).
        torch.set_num_threads(1)
        self._thread = QThread()
        self._thread.setObjectName("inference")
        self._worker = _Worker()
        self._worker.moveToThread(self._thread)
        self._load.connect(self._worker.load)
        self._predict.connect(self._worker.predict)
        self._worker.loaded.connect(self.loaded)
        self._worker.load_failed.connect(self.load_failed)
        self._worker.done.connect(self._on_done)
        self._request = 0
        self._thread.start()

    def load(self, key: str, path: Path, record: RunRecord | None = None, name: str = "") -> None:
        self._load.emit(key, str(path), record, name)

    def predict(self, image: np.ndarray, predictors: dict[str, Predictor]) -> int:
        """Post ``image`` (2-D uint8) for ``predictors``; returns the request id."""
        self._request += 1
        self._worker.latest = self._request
        self._predict.emit(self._request, image, dict(predictors))
        return self._request

    def invalidate(self) -> None:
        """Drop whatever is in flight (the model changed, say)."""
        self._request += 1
        self._worker.latest = self._request

    @property
    def latest_request(self) -> int:
        return self._request

    def _on_done(self, outcome: Outcome) -> None:
        if outcome.request == self._request:  # stale results are dropped here
            self.finished.emit(outcome)

    def shutdown(self) -> None:
        """Stop the worker thread (after the request it is running, if any). Idempotent."""
        stop_thread(self.__dict__.get("_thread"))

    def __del__(self) -> None:
        # A window dropped without being closed must not take a running QThread with it: Qt
        # aborts the process when a running thread's object is destroyed.
        self.shutdown()
