"""Monitoring: throughput, the hyperparameters with their results (the HPARAMS tab) and the
per-layer summary as text.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from cnn_lightning.callbacks.writers import log_scalars, tensorboards


class ImagesPerSecond(L.Callback):
    """Training throughput from the wall time of training batches, validation excluded.

    ``perf/images_per_sec`` is the rate over the last ``log_every_n_steps`` optimizer steps
    (the trainer's setting when None); ``perf/images_per_sec_epoch`` and ``perf/epoch_time_s``
    cover each training epoch. Under DDP the rate is rank 0's times the number of processes.
    """

    def __init__(self, log_every_n_steps: int | None = None):
        self.log_every_n_steps = log_every_n_steps
        self._reset_epoch()
        self._window_images, self._window_time, self._last, self._logged_step = 0, 0.0, None, -1

    def _reset_epoch(self) -> None:
        self._epoch_images, self._epoch_time = 0, 0.0

    def _sync(self, trainer) -> None:
        # Kernels run asynchronously on accelerators: wait for them where a rate is read.
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._reset_epoch()
        self._last = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._last = None  # the clock pauses over validation; it restarts at the next batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._last is None:
            self._sync(trainer)
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.log_every_n_steps or trainer.log_every_n_steps or 50
        step = trainer.global_step
        # Once per step: with gradient accumulation several batches share a global step.
        due = step % every == 0 and step != self._logged_step
        if due:
            self._sync(trainer)
        now = time.perf_counter()
        elapsed = now - (self._last if self._last is not None else now)
        self._last = now
        images = len(batch[0]) * trainer.world_size
        self._window_images += images
        self._window_time += elapsed
        self._epoch_images += images
        self._epoch_time += elapsed
        if due and self._window_time > 0:
            log_scalars(trainer, {"perf/images_per_sec": self._window_images / self._window_time})
            self._window_images, self._window_time, self._logged_step = 0, 0.0, step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch_time > 0:
            log_scalars(trainer, {
                "perf/images_per_sec_epoch": self._epoch_images / self._epoch_time,
                "perf/epoch_time_s": self._epoch_time,
            })


def flatten_hparams(params: dict, prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as ``{"optimizer/lr": 0.05, ...}`` of numbers and strings.

    TensorBoard's HPARAMS tab takes numbers, strings and booleans; anything else (lists, None)
    is shown as its text so no setting silently disappears from the table.
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_hparams(value, f"{name}/"))
        elif isinstance(value, bool):
            flat[name] = str(value)  # a bool would show as 0.0/1.0
        elif isinstance(value, (int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class HParamsSummary(L.Callback):
    """The run's hyperparameters in the HPARAMS tab, with ``hp/*`` metric columns.

    The model's and the data module's hyperparameters (as Lightning itself collects them) plus
    ``max_epochs`` are written as the run's session at fit start; ``hp/params`` (trainable
    parameters) then, ``hp/val_acc_best`` after every validation, ``hp/test_acc`` after testing.

    Only the session is written, not an experiment summary: TensorBoard then builds the table
    from the sessions of all runs under ``--logdir``, with the union of their hyperparameters
    (a sweep over different nets keeps every net's settings) and every scalar tag as a metric
    column. An experiment summary (what ``log_hyperparams(params, metrics)`` writes) would be
    taken from one arbitrary run for the whole table, and Lightning's default ``hp_metric``
    writes one; hence ``default_hp_metric: false`` in ``conf/logger/tensorboard.yaml``.
    """

    def __init__(self, val_metric: str = "val/acc_best", test_metric: str = "test/acc"):
        self.val_metric, self.test_metric = val_metric, test_metric

    def setup(self, trainer, pl_module, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and getattr(logger, "_default_hp_metric", False):
                rank_zero_warn(
                    "TensorBoardLogger(default_hp_metric=True) writes an hparams experiment with only "
                    "`hp_metric`; it hides the hp/* columns. Set logger.default_hp_metric=false."
                )

    def hparams(self, trainer, pl_module) -> dict[str, Any]:
        params = dict(pl_module.hparams_initial)
        if trainer.datamodule is not None:
            params.update(trainer.datamodule.hparams_initial)
        params["max_epochs"] = trainer.max_epochs
        return flatten_hparams(params)

    def on_fit_start(self, trainer, pl_module) -> None:
        writers = tensorboards(trainer)
        if writers:
            from torch.utils.tensorboard.summary import hparams

            _experiment, session_start, self._session_end = hparams(self.hparams(trainer, pl_module), {})
            for writer in writers:
                writer.file_writer.add_summary(session_start, trainer.global_step)
        params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        log_scalars(trainer, {"hp/params": params})

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.val_metric)
        if value is not None and not trainer.sanity_checking:
            log_scalars(trainer, {"hp/val_acc_best": float(value)})

    def on_fit_end(self, trainer, pl_module) -> None:
        for writer in tensorboards(trainer):
            if getattr(self, "_session_end", None) is not None:
                writer.file_writer.add_summary(self._session_end, trainer.global_step)

    def on_test_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.test_metric)
        if value is not None:
            log_scalars(trainer, {"hp/test_acc": float(value)})


def layer_summary(pl_module: L.LightningModule) -> tuple[str, str]:
    """(text, source): the project's per-layer table (``cnn_lightning.summary``), or Lightning's
    ModelSummary where that module is missing or fails on this net."""
    net = getattr(pl_module.model, "net", pl_module.model) if hasattr(pl_module, "model") else pl_module
    example = getattr(pl_module, "example_input_array", None)
    shape = tuple(example.shape[1:]) if isinstance(example, torch.Tensor) else (1, 28, 28)
    try:
        from cnn_lightning.summary import format_table, layer_table  # imported late: optional here

        return format_table(layer_table(net, input_shape=shape)), "cnn_lightning.summary"
    except ImportError:
        pass
    except Exception as err:  # a summary must never end a training run
        rank_zero_warn(f"LayerSummary: cnn_lightning.summary failed ({err}); using Lightning's summary")
    from lightning.pytorch.utilities.model_summary import ModelSummary

    return str(ModelSummary(pl_module, max_depth=-1)), "Lightning ModelSummary"


class LayerSummary(L.Callback):
    """The per-layer summary (output sizes, parameters, receptive field) as ``model/summary``."""

    def on_fit_start(self, trainer, pl_module) -> None:
        writers = tensorboards(trainer)
        if not writers:
            return
        text, source = layer_summary(pl_module)
        # Four-space indent: TensorBoard's Markdown then keeps the table's columns aligned.
        body = "\n".join("    " + line for line in text.splitlines()) + f"\n\n(from {source})"
        for writer in writers:
            writer.add_text("model/summary", body, trainer.global_step)
