"""The net's penultimate features in TensorBoard's projector: where the digits lie in the space
the classifier reads, and how training pulls the classes apart.
"""

from __future__ import annotations

import lightning as L
import torch

from cnn_lightning.callbacks.writers import tensorboards
from cnn_lightning.knowledge import logits_and_features


class Embedding(L.Callback):
    """Every ``every_n_epochs`` epochs and after the last one, the penultimate features (the input
    of the last layer with weights) of the first ``num_digits`` validation digits, with their
    images (the sprite, in [0, 1]) and labels, to the PROJECTOR tab (``add_embedding``, tag
    ``embedding/penultimate``, one per logged step). The digits are fixed: the data module's
    validation split, in order."""

    def __init__(self, every_n_epochs: int = 5, num_digits: int = 2000):
        if every_n_epochs < 1 or num_digits < 1:
            raise ValueError(f"every_n_epochs and num_digits must be at least 1, got {every_n_epochs}, {num_digits}")
        self.every_n_epochs, self.num_digits = every_n_epochs, num_digits

    def due(self, trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last or trainer.should_stop

    def digits(self, trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(images (N, 1, 28, 28) float in [0, 1], labels (N,)) on the CPU, or None without them."""
        splits = getattr(trainer.datamodule, "splits", None) if trainer.datamodule is not None else None
        if not isinstance(splits, dict) or "val" not in splits:
            return None
        images, labels = splits["val"]
        images = images[: self.num_digits].detach().cpu()
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return images, labels[: self.num_digits].detach().cpu()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.due(trainer):
            return
        writers = tensorboards(trainer)
        digits = self.digits(trainer) if writers else None
        if digits is None:
            return
        images, labels = digits
        chunks = [logits_and_features(pl_module.model, part.to(pl_module.device))[1].cpu() for part in images.split(500)]
        features = torch.cat(chunks)
        metadata = [str(int(label)) for label in labels]
        for writer in writers:
            writer.add_embedding(features, metadata=metadata, label_img=images, global_step=trainer.global_step,
                                 tag="embedding/penultimate")
