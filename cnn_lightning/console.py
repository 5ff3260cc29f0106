"""What a run prints: the project's own lines, one progress bar, and none of the libraries' noise.

Lightning prints a few lines the project cannot switch off through any setting; each filter below
names the one it removes and why it cannot be fixed at the cause. Everything else (warnings about
the user's own config, errors) still reaches the console.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings

import lightning as L
import torch

_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
_epoch_log = logging.getLogger("cnn_lightning.train")


class LibraryNoise(logging.Filter):
    """Drops Lightning's advertisement and its repeated loop-exit line."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Lightning's logger connector prints this for every Trainer without a LitLogger; no
        # argument turns it off (lightning 2.6, logger_connector.py).
        if message.startswith("💡 Tip:"):
            return False
        # The OneCycle schedule asks for trainer.estimated_stepping_batches, and Lightning says it
        # loads the training loader to count them; the count is right, the line is noise.
        if message.startswith("Loading `train_dataloader` to estimate number of stepping batches"):
            return False
        # FitLoop.done logs its reason every time it is asked, which is more than once per fit.
        if message.startswith("`Trainer.fit` stopped"):
            if message in self._said:
                return False
            self._said.add(message)
        return True


def quiet_libraries() -> None:
    """Install the filters (idempotent). Call once when an entry point is imported."""
    # torch 2.14 deprecated LeafSpec, which Lightning 2.6's CombinedLoader still builds for every
    # loader (lightning/pytorch/utilities/_pytree.py); the warning is about library code, not ours.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    logger = logging.getLogger(_RANK_ZERO_LOGGER)
    if not any(isinstance(f, LibraryNoise) for f in logger.filters):
        logger.addFilter(LibraryNoise())


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class EpochLine(L.Callback):
    """One line per epoch where the progress bar draws nothing: when standard output is not a
    terminal (a log file, ``| tee``, ``nohup``, CI, an IDE's run pane), or always with
    ``when=always``. Epoch k/N, mean training loss, validation accuracy and the best so far,
    seconds, training images per second, and the time left at the mean epoch time so far.
    Global rank 0 only; nothing per step.
    """

    def __init__(self, when: str = "not_a_terminal") -> None:
        if when not in ("not_a_terminal", "always", "never"):
            raise ValueError(f"callbacks.epoch_line.when={when!r}: must be not_a_terminal, always or never")
        self.when = when
        self._durations: list[float] = []
        self._started = self._train_seconds = 0.0
        self._images = 0
        self._loss_sum, self._best = 0.0, -math.inf

    def active(self) -> bool:
        """Whether it prints: then the progress bar, which would print a block per epoch into a
        file, is left out (train.py)."""
        return self.when == "always" or (self.when == "not_a_terminal" and not sys.stdout.isatty())

    def on_train_start(self, trainer, pl_module) -> None:
        restored = getattr(trainer.checkpoint_callback, "best_model_score", None)  # a resumed run's best
        self._best = float(restored) if restored is not None else -math.inf

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started, self._train_seconds, self._images, self._loss_sum = time.perf_counter(), 0.0, 0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Summed here: the module logs its epoch loss in its own on_train_epoch_end, which
        # Lightning calls after this callback's.
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        size = len(batch[0])
        self._images += size
        if isinstance(loss, torch.Tensor):
            self._loss_sum += float(loss.detach()) * size

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._started and not self._train_seconds:
            self._train_seconds = time.perf_counter() - self._started

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._started
        self._durations.append(seconds)
        if not (self.active() and trainer.is_global_zero):
            return
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}" if trainer.max_epochs and
                 trainer.max_epochs > 0 else f"epoch {trainer.current_epoch + 1}"]
        if self._images:
            parts.append(f"train loss {self._loss_sum / self._images:.4f}")
        accuracy = trainer.callback_metrics.get("val/acc")  # this epoch's: validation ran before
        if accuracy is not None:
            self._best = max(self._best, float(accuracy))
            parts.append(f"val acc {float(accuracy):.2%} (best {self._best:.2%})")
        parts.append(f"{seconds:.1f} s")
        train_seconds = self._train_seconds or seconds
        if self._images and train_seconds > 0:
            parts.append(f"{self._images / train_seconds:,.0f} img/s")
        left = trainer.max_epochs - trainer.current_epoch - 1 if trainer.max_epochs and trainer.max_epochs > 0 else 0
        if left > 0 and math.isfinite(seconds):
            parts.append(f"~{_duration(left * sum(self._durations) / len(self._durations))} left")
        _epoch_log.info("  ".join(parts))
