"""One LightningModule that trains any net of ``cnn_lightning.nets`` as a 10-way classifier."""

from __future__ import annotations

import inspect

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from cnn_lightning import distill as kd
from cnn_lightning.checkpoints import build_model
from cnn_lightning.config import to_plain


class Classifier(L.LightningModule):
    """Cross-entropy training of ``net`` (a config with ``_target_`` in ``cnn_lightning.nets``).

    ``optimizer`` and ``scheduler`` are Hydra configs of torch classes, built in
    ``configure_optimizers``; a scheduler that takes ``total_steps`` (OneCycleLR) gets the
    trainer's estimate. ``scheduler_interval`` is ``step`` or ``epoch``; ``monitor`` feeds
    ReduceLROnPlateau. ``compile`` and ``channels_last`` are speed switches that change no result
    beyond float rounding. ``distill`` (``{teacher, temperature, weight}``, see ``distill.py``)
    adds a frozen teacher's softened predictions to the training loss; None: plain CE.
    """

    def __init__(
        self,
        name: str,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/acc",
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        num_classes: int = 10,
        compile: bool = False,
        channels_last: bool = False,
        distill: dict | None = None,
    ):
        super().__init__()
        hparams = dict(
            name=name, net=to_plain(net), optimizer=to_plain(optimizer), scheduler=to_plain(scheduler),
            scheduler_interval=scheduler_interval, monitor=monitor,
            label_smoothing=label_smoothing, l1=l1, num_classes=num_classes,
            compile=compile, channels_last=channels_last, distill=to_plain(distill),
        )
        lr = hparams["optimizer"].get("lr", 1.0)
        if not lr > 0:
            raise ValueError(f"model.optimizer.lr must be positive, got {lr}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"model.scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.distill = kd.settings(hparams["distill"])  # defaults filled in; None: off
        if self.distill and self.distill["teacher"] == "best":
            raise ValueError("model.distill.teacher=best is resolved by cnn_lightning.train; give checkpoint paths")
        self.save_hyperparameters(hparams)
        self.model = build_model(self.hparams.net)  # Normalize + net: takes [0, 1] images
        self.example_input_array = torch.zeros(1, 1, 28, 28)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric()  # the epoch's mean training loss, weighted by batch size
        self.train_distill_loss = MeanMetric()  # ... and of its distillation term, when distilling
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers it
        # A plain attribute, not a submodule: no state_dict, optimizer or summary sees the teachers.
        self.teachers = kd.Teachers(kd.teacher_paths(self.distill["teacher"])) if self.distill else None

    def configure_model(self) -> None:
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            self.model.compile()  # in place: the state_dict keys stay those of the plain net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor):
        """(logits, the loss to minimise, the distillation term T^2 * KL or None) of a batch."""
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        if self.teachers is None:
            return logits, loss, None
        temperature, alpha = self.distill["temperature"], self.distill["weight"]
        # The teachers see the same (augmented) images; no_grad inside, so only the student learns.
        distill_loss = kd.distillation_loss(logits, self.teachers.probs(images, temperature), temperature)
        return logits, (1 - alpha) * loss + alpha * distill_loss, distill_loss

    def _eval_step(self, batch, stage: str, accuracy):
        # plain CE: val/loss and test/loss stay comparable with and without a teacher
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        accuracy.update(logits, labels)
        # a few large evaluation batches: let Lightning compute and reset
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)

    def _logs_this_step(self) -> bool:
        # Lightning writes step values only every trainer.log_every_n_steps steps, but each
        # self.log call costs its result bookkeeping (~1 ms a step for tiny on a CPU,
        # benchmarks/lightning_overhead.py), so call it only on the steps that are written.
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True) or self.trainer.fast_dev_run)

    def training_step(self, batch, batch_idx):
        # Training metrics are updated every step and logged as train/loss_step on the steps
        # Lightning writes, and as epoch values (train/loss_epoch, train/acc) at the epoch's end.
        images, labels = batch
        logits, loss, distill_loss = self.training_loss(images, labels)
        self.train_acc.update(logits, labels)
        self.train_loss.update(loss.detach(), weight=len(labels))
        if distill_loss is not None:
            self.train_distill_loss.update(distill_loss.detach(), weight=len(labels))
        if self._logs_this_step():
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        if self.hparams.l1 > 0:
            loss = loss + self.hparams.l1 * sum(p.abs().sum() for p in self.model.parameters())
        if not torch.isfinite(loss):
            # Stop before the optimizer step spreads NaNs into the weights: the checkpoints on
            # disk (the best and last.ckpt) are the last good ones.
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); try a lower model.optimizer.lr"
            )
        return loss

    def on_train_epoch_end(self) -> None:
        # compute() syncs the ranks' states, so no sync_dist here
        self.log("train/loss_epoch", self.train_loss.compute(), prog_bar=True, sync_dist=False)
        self.log("train/acc", self.train_acc.compute(), prog_bar=True, sync_dist=False)
        if self.teachers is not None:
            self.log("train/distill_loss", self.train_distill_loss.compute(), sync_dist=False)
            self.train_distill_loss.reset()
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check's few batches are not an epoch
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_acc)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Augmentation and dropout draw from torch's global generators; saving them makes a
        # resumed run draw exactly what the uninterrupted run would have.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before Lightning restores the optimizer and scheduler from the same dict. A
        # resumed run with a larger trainer.max_epochs has more steps than the saved OneCycleLR
        # was built for (it would raise "Tried to step N times"): keep the step count, drop the
        # saved length and phases so the new scheduler's (built for the new length) stay.
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        for state in checkpoint.get("lr_schedulers", []) if fitting else []:
            new_total = max(int(self.trainer.estimated_stepping_batches), 10)
            if "_schedule_phases" in state and state.get("total_steps", new_total) != new_total:
                del state["total_steps"], state["_schedule_phases"]
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self):
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        target = hydra.utils.get_class(self.hparams.scheduler["_target_"])
        extra = {}
        if "total_steps" in inspect.signature(target).parameters and "total_steps" not in self.hparams.scheduler:
            # At least 10: OneCycleLR divides by its warm-up length, which a debug run of a few
            # batches (fast_dev_run) would make zero. Fewer steps than planned is harmless.
            extra["total_steps"] = max(int(self.trainer.estimated_stepping_batches), 10)
        scheduler = hydra.utils.instantiate(self.hparams.scheduler, optimizer=optimizer, **extra)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.hparams.scheduler_interval,
                "monitor": self.hparams.monitor,
            },
        }
