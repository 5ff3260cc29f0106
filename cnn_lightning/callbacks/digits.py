"""Digits the net sees and gets wrong: the augmented training batch, the worst misclassified
validation digits and the test confusion matrix.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from cnn_lightning.callbacks.render import caption_grid, render_confusion, to_hwc, upscale
from cnn_lightning.callbacks.writers import tensorboards


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
        images = upscale(images, images.shape[-1] * self.scale)
        grid = make_grid(images, nrow=self.nrow, padding=2, pad_value=0.5)
        for writer in writers:
            writer.add_image("inputs/train_augmented", grid, trainer.global_step)


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, through c10d's ``all_gather``.

    Not ``LightningModule.all_gather``: it goes through ``torch.distributed.nn.functional.all_gather``
    (autograd-aware, which this needs not), deprecated since torch 2.14, and rank 1 warned so.
    """
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor)
    return torch.cat(parts)


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
            fields = [gather(f) for f in fields]
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
