"""Inside the net: feature maps of fixed digits, the first convolution's kernels, weight and
gradient histograms, and the graph.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchvision.utils import make_grid

from cnn_lightning.callbacks.render import minmax, upscale
from cnn_lightning.callbacks.writers import tensorboards
from cnn_lightning.inference import feature_maps


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


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
        inputs = upscale(self.digits, self.cell)
        for index, (name, output) in enumerate(maps.items()):
            grid = self.render(inputs, output.float().cpu())
            for writer in writers:
                writer.add_image(f"feature_maps/{index:02d}_{name}", grid, trainer.global_step)

    def render(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        channels = output[:, : self.max_channels]
        channels = minmax(channels, dims=(1, 2, 3))  # per digit, across its channels
        n, c = channels.shape[:2]
        cells = upscale(channels.reshape(n * c, 1, *channels.shape[2:]), self.cell).reshape(n, c, 1, self.cell, self.cell)
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
        grid = make_grid(upscale(rgb, self.cell), nrow=self.nrow, padding=2, pad_value=0.5)
        for writer in writers:
            writer.add_image(f"kernels/{name}", grid, trainer.global_step)

    def on_train_start(self, trainer, pl_module) -> None:
        self.log_kernels(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_kernels(trainer, pl_module)


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
