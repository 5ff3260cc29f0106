"""Lightning callbacks that make TensorBoard explain a training run, not just plot its loss.

Each callback is switched on or off in ``conf/callbacks/`` and writes to every TensorBoard logger
of the trainer (none: it does nothing). Images, text and histograms are written on global rank 0
only; whatever needs data from every process (the worst misclassified digits, the confusion
matrix) is gathered with collectives that every rank calls, so DDP neither deadlocks nor shows a
single shard.

Tags (all prefixed so that TensorBoard groups them):
    perf/images_per_sec, perf/images_per_sec_epoch, perf/epoch_time_s   ImagesPerSecond
    hp/params, hp/val_acc_best, hp/test_acc + the HPARAMS tab               HParamsSummary
    inputs/train_augmented                                                  AugmentedInputs
    val/misclassified (image + text)                                        MisclassifiedDigits
    test/confusion_matrix (image + text)                                    ConfusionMatrix
    feature_maps/NN_<layer>                                                 FeatureMaps
    kernels/<first conv>                                                    FirstConvKernels
    weights/<param>, grads/<param>                                          Histograms
    model/summary (text)                                                    LayerSummary
    the GRAPHS tab                                                          ModelGraph
"""

from __future__ import annotations

import functools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from cnn_lightning.inference import feature_maps

# --------------------------------------------------------------------------------------------
# Helpers


def tensorboards(trainer: L.Trainer) -> list:
    """The SummaryWriters of the trainer's TensorBoard loggers; empty off rank 0."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def log_scalars(trainer: L.Trainer, metrics: dict[str, float], step: int | None = None) -> None:
    """Scalars to every logger (not only TensorBoard), on rank 0, at the global step."""
    if not trainer.is_global_zero:
        return
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step)


@functools.cache
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font when Pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def to_hwc(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) to (N, C, size, size), nearest: small maps stay crisp pixels, not blur."""
    return F.interpolate(images.float(), size=(size, size), mode="nearest")


def _minmax(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    low = x.amin(dim=dims, keepdim=True)
    high = x.amax(dim=dims, keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-8)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def caption_grid(images: torch.Tensor, lines: list[tuple[str, str]], scale: int = 3, ncol: int = 8) -> Image.Image:
    """Grey digits (N, 1, 28, 28) in [0, 1], upscaled, each with two caption lines below."""
    size = images.shape[-1] * scale
    cell_w, cell_h, pad = size, size + 30, 4
    ncol = max(1, min(ncol, len(images)))
    nrow = max(1, math.ceil(len(images) / ncol))
    canvas = Image.new("RGB", (ncol * (cell_w + pad) + pad, nrow * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (_upscale(images, size)[:, 0] * 255).round().clamp(0, 255).byte().cpu().numpy()
    for i, (digit, (top, bottom)) in enumerate(zip(pixels, lines, strict=True)):
        x = pad + (i % ncol) * (cell_w + pad)
        y = pad + (i // ncol) * (cell_h + pad)
        canvas.paste(Image.fromarray(digit, "L"), (x, y))
        draw.text((x + 2, y + size + 1), top, fill=(0, 0, 0), font=_font(12))
        draw.text((x + 2, y + size + 15), bottom, fill=(180, 0, 0), font=_font(12))
    return canvas


class _CaptureLogits:
    """Keep the logits of the LightningModule's own forward calls in an evaluation loop.

    A forward hook sees what ``validation_step``/``test_step`` computed anyway, so the
    callbacks below cost no second forward pass and need nothing from the module's code.
    """

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None
        self._handle = None

    def attach(self, pl_module: nn.Module) -> None:
        self.detach()
        self.logits = None

        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 2:
                self.logits = output.detach()

        self._handle = pl_module.register_forward_hook(hook)

    def take(self) -> torch.Tensor | None:
        logits, self.logits = self.logits, None
        return logits

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


# --------------------------------------------------------------------------------------------
# Scalars


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


# --------------------------------------------------------------------------------------------
# Images


class AugmentedInputs(L.Callback):
    """A grid of the first training batch exactly as the net gets it (after augmentation).

    Logged once per fit; the data module augments in ``on_after_batch_transfer``, which has run
    when ``on_train_batch_start`` sees the batch.
    """

    def __init__(self, num_images: int = 64, nrow: int = 8, scale: int = 2):
        self.num_images, self.nrow, self.scale = num_images, nrow, scale
        self._done = False

    def on_fit_start(self, trainer, pl_module) -> None:
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._done:
            return
        self._done = True
        writers = tensorboards(trainer)
        if not writers:
            return
        images = batch[0][: self.num_images].detach().float().cpu().clamp(0, 1)
        images = _upscale(images, images.shape[-1] * self.scale)
        grid = make_grid(images, nrow=self.nrow, padding=2, pad_value=0.5)
        for writer in writers:
            writer.add_image("inputs/train_augmented", grid, trainer.global_step)


class MisclassifiedDigits(L.Callback):
    """Per epoch, the ``num_images`` validation digits the net gets most confidently wrong.

    "Worst" is the highest cross-entropy among misclassified digits. The image captions give
    the label, the prediction and its probability; the same list is logged as text.
    """

    def __init__(self, num_images: int = 16, ncol: int = 8):
        self.num_images, self.ncol = num_images, ncol
        self._logits = _CaptureLogits()
        self._reset()

    def _reset(self) -> None:
        self._scores = self._images = self._labels = self._preds = self._probs = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()
        if not trainer.sanity_checking:
            self._logits.attach(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        logits = self._logits.take()
        if logits is None or trainer.sanity_checking:
            return
        images, labels = batch
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
        probs, preds = logits.float().softmax(1).max(1)
        # Correct digits score -inf: they fill no slot while a wrong one is left.
        scores = torch.where(preds != labels, loss, torch.full_like(loss, -math.inf))
        k = self.num_images
        pool = [scores, images.detach(), labels, preds, probs]
        if self._scores is not None:
            pool = [torch.cat([a, b]) for a, b in zip(
                [self._scores, self._images, self._labels, self._preds, self._probs], pool, strict=True)]
        top = pool[0].topk(min(k, len(pool[0]))).indices
        self._scores, self._images, self._labels, self._preds, self._probs = (t[top] for t in pool)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._logits.detach()
        if trainer.sanity_checking or self._scores is None:
            return
        k = self.num_images
        fields = [self._scores, self._images, self._labels, self._preds, self._probs]
        if trainer.world_size > 1:
            # Every rank pads to k (score -inf) so the gather has equal shapes on all ranks.
            short = k - len(fields[0])
            if short > 0:
                fields = [torch.cat([f, f.new_full((short, *f.shape[1:]), -math.inf if i == 0 else 0)])
                          for i, f in enumerate(fields)]
            fields = [pl_module.all_gather(f).flatten(0, 1) for f in fields]
            top = fields[0].topk(k).indices
            fields = [f[top] for f in fields]
        scores, images, labels, preds, probs = (f.cpu() for f in fields)
        wrong = torch.isfinite(scores)
        self._reset()
        writers = tensorboards(trainer)
        if not writers:
            return
        scores, images, labels, preds, probs = (f[wrong] for f in (scores, images, labels, preds, probs))
        rows = ["| # | label | predicted | probability | loss |", "|---|---|---|---|---|"]
        rows += [f"| {i} | {int(y)} | {int(p)} | {float(q):.3f} | {float(s):.3f} |"
                 for i, (y, p, q, s) in enumerate(zip(labels, preds, probs, scores, strict=True))]
        if len(images) == 0:
            rows.append("no misclassified validation digit")
        step = trainer.global_step
        for writer in writers:
            writer.add_text("val/misclassified", "\n".join(rows), step)
            if len(images):
                lines = [(f"label {int(y)}", f"pred {int(p)} {float(q):.0%}") for y, p, q in zip(labels, preds, probs, strict=True)]
                picture = caption_grid(images.float().clamp(0, 1), lines, ncol=self.ncol)
                writer.add_image("val/misclassified", to_hwc(picture), step, dataformats="HWC")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._logits.detach()


def render_confusion(matrix: torch.Tensor, cell: int = 44) -> Image.Image:
    """The confusion matrix (rows: label, columns: prediction) with every count printed.

    The diagonal is blue by recall; off-diagonal cells are red relative to the largest error,
    so the common confusions stand out even when they are a fraction of a percent.
    """
    m = matrix.cpu().long()
    n = m.shape[0]
    left, top, bottom = 56, 52, 34
    width, height = left + n * cell + 8, top + n * cell + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, big = _font(13), _font(14)
    row_sum = m.sum(1).clamp_min(1)
    max_error = max(int((m - torch.diag(torch.diag(m))).max()), 1)
    for i in range(n):
        for j in range(n):
            count = int(m[i, j])
            x, y = left + j * cell, top + i * cell
            if i == j:
                level = count / int(row_sum[i])
                fill = (int(255 - 200 * level), int(255 - 140 * level), 255)
            else:
                level = count / max_error
                fill = (255, int(255 - 200 * level), int(255 - 200 * level))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(210, 210, 210))
            text_color = (255, 255, 255) if level > 0.6 else (0, 0, 0)
            draw.text((x + cell / 2, y + cell / 2), str(count), fill=text_color, font=small, anchor="mm")
        draw.text((left + i * cell + cell / 2, top - 10), str(i), fill=(0, 0, 0), font=big, anchor="mm")
        draw.text((left - 12, top + i * cell + cell / 2), str(i), fill=(0, 0, 0), font=big, anchor="mm")
    draw.text((left + n * cell / 2, 14), "predicted", fill=(0, 0, 0), font=big, anchor="mm")
    draw.text((4, top - 30), "label", fill=(0, 0, 0), font=big)
    total = int(m.sum())
    accuracy = int(torch.diag(m).sum()) / max(total, 1)
    draw.text((left, top + n * cell + 10), f"{total} images, accuracy {accuracy:.2%}", fill=(0, 0, 0), font=big)
    return image


class ConfusionMatrix(L.Callback):
    """The confusion matrix of the model under test (train.py tests the best checkpoint).

    Logged as an image with readable counts and as a Markdown table of the same counts, which
    sum to the number of images tested.
    """

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        self._logits = _CaptureLogits()
        self.matrix: MulticlassConfusionMatrix | None = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        n = self.num_classes or int(getattr(pl_module.hparams, "num_classes", 10))
        self.matrix = MulticlassConfusionMatrix(n).to(pl_module.device)
        self._logits.attach(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        logits = self._logits.take()
        if logits is not None and self.matrix is not None:
            self.matrix.update(logits, batch[1])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._logits.detach()
        if self.matrix is None:
            return
        matrix = self.matrix.compute().cpu()  # every rank: compute() sums over processes
        self.matrix = None
        writers = tensorboards(trainer)
        if not writers:
            return
        n = matrix.shape[0]
        rows = ["| label \\ predicted | " + " | ".join(map(str, range(n))) + " |", "|---" * (n + 1) + "|"]
        rows += [f"| {i} | " + " | ".join(str(int(c)) for c in matrix[i]) + " |" for i in range(n)]
        picture = render_confusion(matrix)
        for writer in writers:
            writer.add_image("test/confusion_matrix", to_hwc(picture), trainer.global_step, dataformats="HWC")
            writer.add_text("test/confusion_matrix", "\n".join(rows), trainer.global_step)


class FeatureMaps(L.Callback):
    """Every ``every_n_epochs`` epochs and after the last one, each layer's feature maps of a
    fixed set of validation digits: one image per layer, a row per digit (the digit first), a
    column per channel (the first ``max_channels``), each row scaled to its own range.

    The digits are the first validation example of each class (up to ``num_digits``), so
    successive images show the same digits and what training changed.
    """

    def __init__(self, every_n_epochs: int = 5, num_digits: int = 10, max_channels: int = 16, cell: int = 28):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        self.every_n_epochs, self.num_digits = every_n_epochs, num_digits
        self.max_channels, self.cell = max_channels, cell
        self.digits: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.digits is not None or batch_idx != 0 or not trainer.is_global_zero:
            return
        images, labels = batch
        picks = [int((labels == c).nonzero()[0, 0]) for c in labels.unique(sorted=True)]
        self.digits = images[picks[: self.num_digits]].detach().cpu().float()

    def due(self, trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last or trainer.should_stop

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.digits is None or not self.due(trainer):
            return
        writers = tensorboards(trainer)
        if not writers:
            return
        images = self.digits.to(pl_module.device)
        maps = torch.compiler.disable(feature_maps)(pl_module.model, images)[1]
        inputs = _upscale(self.digits, self.cell)
        for index, (name, output) in enumerate(maps.items()):
            grid = self.render(inputs, output.float().cpu())
            for writer in writers:
                writer.add_image(f"feature_maps/{index:02d}_{name}", grid, trainer.global_step)

    def render(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        channels = output[:, : self.max_channels]
        channels = _minmax(channels, dims=(1, 2, 3))  # per digit, across its channels
        n, c = channels.shape[:2]
        cells = _upscale(channels.reshape(n * c, 1, *channels.shape[2:]), self.cell).reshape(n, c, 1, self.cell, self.cell)
        tiles = torch.cat([inputs.unsqueeze(1), cells], dim=1).flatten(0, 1)  # digit, then its maps
        return make_grid(tiles, nrow=c + 1, padding=2, pad_value=0.3)


class FirstConvKernels(L.Callback):
    """The first convolution's kernels, red positive, blue negative, white zero (one scale per
    image); at fit start and every ``every_n_epochs`` training epochs."""

    def __init__(self, every_n_epochs: int = 1, cell: int = 40, nrow: int = 8):
        self.every_n_epochs, self.cell, self.nrow = every_n_epochs, cell, nrow

    def log_kernels(self, trainer, pl_module) -> None:
        writers = tensorboards(trainer)
        found = first_conv(pl_module) if writers else None
        if not found:
            return
        name, conv = found
        weight = conv.weight.detach().float().cpu()
        kernels = weight.flatten(0, 1).unsqueeze(1)  # (out * in, 1, k, k)
        v = (kernels / kernels.abs().max().clamp_min(1e-12)).clamp(-1, 1)
        pos, neg = v.clamp(min=0), (-v).clamp(min=0)
        rgb = torch.cat([1 - neg, 1 - pos - neg, 1 - pos], dim=1)
        grid = make_grid(_upscale(rgb, self.cell), nrow=self.nrow, padding=2, pad_value=0.5)
        for writer in writers:
            writer.add_image(f"kernels/{name}", grid, trainer.global_step)

    def on_train_start(self, trainer, pl_module) -> None:
        self.log_kernels(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_kernels(trainer, pl_module)


# --------------------------------------------------------------------------------------------
# Histograms and text


class Histograms(L.Callback):
    """Histograms of every parameter and its gradient, every ``every_n_steps`` optimizer steps
    (``weights/<name>``, ``grads/<name>``); the gradients are those the optimizer is about to
    apply (after clipping and AMP unscaling)."""

    def __init__(self, every_n_steps: int = 200, weights: bool = True, grads: bool = True):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps, self.weights, self.grads = every_n_steps, weights, grads

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        writers = tensorboards(trainer)
        for name, param in pl_module.named_parameters() if writers else ():
            for writer in writers:
                if self.weights:
                    writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
                if self.grads and param.grad is not None:
                    writer.add_histogram(f"grads/{name}", param.grad.detach().float().cpu(), step)


class ModelGraph(L.Callback):
    """The net's graph (the GRAPHS tab), traced once at fit start from ``example_input_array``.

    A callback rather than ``TensorBoardLogger(log_graph=True)``: the logger traces again at
    every ``trainer.test`` and fails the whole run on a compiled model, which cannot be traced;
    here a compiled model or a failed trace only costs the graph, with a warning.
    """

    def on_fit_start(self, trainer, pl_module) -> None:
        writers = tensorboards(trainer)
        example = getattr(pl_module, "example_input_array", None)
        if not writers or not isinstance(example, torch.Tensor):
            return
        net = getattr(pl_module, "model", pl_module)
        if any(getattr(m, "_compiled_call_impl", None) is not None for m in net.modules()):
            rank_zero_warn("ModelGraph: a compiled model cannot be traced; no graph logged.")
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.trace's deprecation notice
                for writer in writers:
                    writer.add_graph(net, example.to(pl_module.device))
        except Exception as err:  # a picture must never end a training run
            rank_zero_warn(f"ModelGraph: tracing failed, no graph logged: {err}")


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


# --------------------------------------------------------------------------------------------
# Benchmarks


class EpochTimer(L.Callback):
    """Benchmark aid: wall and CPU time of every training epoch (validation included) and of
    testing, as JSON lines in ``path``. CPU time (all threads of this process) is what other load
    on a shared machine disturbs least. Under ``trainer.profiler=simple`` each epoch's record
    also holds the seconds spent in every callback hook during that epoch (Lightning's profiler
    times each ``[Callback]<name>.<hook>`` call)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._start = (0.0, 0.0)
        self._hooks: dict[str, float] = {}

    @staticmethod
    def _hook_totals(trainer) -> dict[str, float]:
        durations = getattr(trainer.profiler, "recorded_durations", {})
        return {k: float(sum(v)) for k, v in durations.items() if k.startswith("[Callback]")}

    def _begin(self, trainer) -> None:
        self._start = (time.perf_counter(), time.process_time())
        self._hooks = self._hook_totals(trainer)

    def _write(self, trainer, record: dict) -> None:
        if not trainer.is_global_zero:
            return
        record["seconds"] = time.perf_counter() - self._start[0]
        record["cpu_seconds"] = time.process_time() - self._start[1]
        hooks = {k: v - self._hooks.get(k, 0.0) for k, v in self._hook_totals(trainer).items()}
        record["hooks"] = {k: v for k, v in hooks.items() if v > 0}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._begin(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._write(trainer, {"stage": "start"})  # from setup to the first batch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._begin(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._write(trainer, {"stage": "epoch", "epoch": trainer.current_epoch})

    def on_test_start(self, trainer, pl_module) -> None:
        self._begin(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, {"stage": "test"})
