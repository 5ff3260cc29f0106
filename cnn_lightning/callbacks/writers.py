"""Where the callbacks write: the trainer's TensorBoard writers (rank 0 only) and its loggers.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger


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
