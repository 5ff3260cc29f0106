"""Writing checkpoints safely: whole files only, and a resumable one when a signal stops training."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file in the same directory and
    ``os.replace``: a full disk, a kill or a crash mid-write leaves the previous file (or none),
    never a truncated checkpoint. (Lightning's own writer opens the target itself.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            # torch.save closing its zip after a failed write raises "unexpected pos" and hides
            # the cause (a full disk, ENOSPC): raise that cause, which says what went wrong.
            if isinstance(err, RuntimeError) and isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise


# The signals that stop a run: SIGTERM (kill, a scheduler, docker stop) and SIGINT (Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(RuntimeError):
    """Training stopped by SIGTERM or SIGINT, with a resumable checkpoint saved."""


class StopSignals:
    """Outside ``trainer.fit`` (a run starting up, or testing) there is no batch end to wait for
    and nothing to save: within ``with StopSignals():`` SIGTERM and SIGINT raise ``Interrupted`` at
    once, a one-line stop instead of a KeyboardInterrupt traceback or a silent kill. ``fitting()``
    stands aside for the fit, where Lightning's handler and ``InterruptCheckpoint`` stop at a batch
    end and save (Lightning would call any handler it finds from its own, mid-step)."""

    def __init__(self):
        self.phase = "while the run was starting (nothing to resume: run it again)"
        self._outer: dict[int, Any] = {}

    def _stop(self, signum, frame) -> None:
        raise Interrupted(f"stopped by {signal.Signals(signum).name} {self.phase}")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            self._outer = {s: signal.signal(s, self._stop) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._outer.items():
            signal.signal(signum, handler)

    @contextlib.contextmanager
    def fitting(self):
        for signum, handler in self._outer.items():
            signal.signal(signum, handler)
        try:
            yield
        finally:
            self.phase = "after training, while testing the best checkpoint"
            for signum in self._outer:
                signal.signal(signum, self._stop)


class InterruptCheckpoint(Callback):
    """SIGTERM and SIGINT stop training at the end of the current batch and save ``last.ckpt``
    (atomically, through the trainer's checkpoint IO), which ``resume=<run dir>`` continues from.

    Lightning already turns SIGTERM into a stop at the next batch end; SIGINT is routed the same
    way, instead of a KeyboardInterrupt that could land in the middle of an optimizer step.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum, frame) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name
        if callable(self._lightning_sigterm):  # Lightning's handler: stop at the batch end
            # It logs "Received SIGTERM", which would misname a Ctrl-C; the stop message names it.
            lightning_log = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")
            was_disabled = lightning_log.disabled
            lightning_log.disabled = was_disabled or signum != signal.SIGTERM
            try:
                self._lightning_sigterm(signal.SIGTERM, frame)
            finally:
                lightning_log.disabled = was_disabled

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning installed its SIGTERM handler when fit began; wrap it to learn the signal.
        self._lightning_sigterm = signal.getsignal(signal.SIGTERM)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        try:
            if isinstance(exception, SIGTERMException):
                # Still under this callback's handlers: a second signal while saving (a parallel
                # sweep's parent passes a group's Ctrl-C on to its jobs) only sets the stop flag
                # again, instead of a KeyboardInterrupt in the middle of the save.
                trainer.save_checkpoint(self.path, weights_only=False)  # with optimizer state: resumable
                self.signal_name = self.signal_name or "SIGTERM"
        finally:
            self._restore()
