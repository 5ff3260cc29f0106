"""Distributed data parallel through the real entry point: ``trainer=ddp_sim`` is two CPU processes
talking over gloo, started with spawn, exactly the code path of DDP on GPUs.

One short run shows that (a) every rank draws its own shard of the training split, the shards are
disjoint and together cover the split, and (b) validation and test metrics are reduced across the
ranks: every rank logs the same value, equal to a single-process evaluation of the checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import read_summary, run_train
from lightning.pytorch.callbacks import Callback

import cnn_lightning
from cnn_lightning.data import TRAIN_SIZE, MNISTDataModule

TESTS_DIR = Path(__file__).resolve().parent
# A large validation hold-out leaves a small training split, so that a whole epoch (needed to show
# that the shards cover the split) takes seconds; 6,000 is even, so no rank drops an image.
VAL_SIZE = 54_000
VAL_BATCHES = 3  # per rank, of data.eval_batch_size=1000: 6,000 validation images in all


class _RecordingSampler:
    """Wraps a rank's ShardedBatchSampler and keeps every index batch it hands out."""

    def __init__(self, inner, drawn: list):
        self.inner, self.drawn = inner, drawn

    def __getattr__(self, name):  # set_epoch, size, ...: the wrapped sampler's
        return getattr(self.inner, name)

    def __iter__(self):
        for index in self.inner:
            self.drawn.append(index.clone())
            yield index

    def __len__(self) -> int:
        return len(self.inner)


class ShardRecorder(Callback):
    """Test-only callback, added with ``+callbacks.shard_recorder``. In every rank's process it
    records the indices that rank's batches were drawn from and the metrics the rank ends up with,
    and writes them to ``out_dir/<stage>_rank<r>.json``."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.drawn: dict[str, list] = {}

    def _wrap(self, loaders, split: str) -> None:
        self.drawn[split] = []
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            # The batch generator reads loader.sampler when its first batch is drawn, after this hook.
            loader.sampler = _RecordingSampler(getattr(loader.sampler, "inner", loader.sampler), self.drawn[split])

    def on_train_epoch_start(self, trainer, pl_module):
        self._wrap(trainer.train_dataloader, "train")

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._wrap(trainer.val_dataloaders, "val")

    def on_test_epoch_start(self, trainer, pl_module):
        self._wrap(trainer.test_dataloaders, "test")

    def _write(self, trainer, stage: str, metrics: list[str]) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "pid": os.getpid(),
            "split_sizes": {k: len(v[0]) for k, v in trainer.datamodule.splits.items()},
            "drawn": {k: torch.cat(v).tolist() if v else [] for k, v in self.drawn.items()},
            "metrics": {m: float(trainer.callback_metrics[m]) for m in metrics},
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"{stage}_rank{trainer.global_rank}.json").write_text(json.dumps(record))

    # on_*_end, not on_*_epoch_end: only then are the epoch's metrics reduced into callback_metrics
    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._write(trainer, "fit", ["val/acc", "val/loss"])

    def on_test_end(self, trainer, pl_module):
        self._write(trainer, "test", ["test/acc", "test/loss"])


def _evaluate(model, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a loaded model, in this one process."""
    with torch.no_grad():
        logits = torch.cat([model(x.float() / 255) for x in images.split(1000)])
    return (logits.argmax(1) == labels).float().mean().item(), F.cross_entropy(logits, labels).item()


def test_ddp_sim_shards_the_training_split_and_syncs_metrics(tmp_path, mnist_dir, monkeypatch):
    record_dir, run_dir = tmp_path / "record", tmp_path / "run"
    # The spawned ranks unpickle ShardRecorder, so they must be able to import this module.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    result = run_train(
        "trainer=ddp_sim",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        f"trainer.limit_val_batches={VAL_BATCHES}",
        f"data.val_size={VAL_SIZE}",
        "~callbacks.progress_bar",
        "+callbacks.shard_recorder._target_=test_ddp.ShardRecorder",
        f"+callbacks.shard_recorder.out_dir={record_dir}",
        f"hydra.run.dir={run_dir}",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fit = [json.loads((record_dir / f"fit_rank{r}.json").read_text()) for r in (0, 1)]
    test = [json.loads((record_dir / f"test_rank{r}.json").read_text()) for r in (0, 1)]

    # Two real processes in one gloo process group.
    for rank, record in enumerate(fit + test):
        assert record["rank"] == rank % 2 and record["world_size"] == 2 and record["backend"] == "gloo"
    assert fit[0]["pid"] != fit[1]["pid"]

    # (a) the training split: disjoint shards that together are all of it, once each
    train_size = TRAIN_SIZE - VAL_SIZE
    assert fit[0]["split_sizes"]["train"] == train_size
    shards = [r["drawn"]["train"] for r in fit]
    assert len(shards[0]) == len(shards[1]) == train_size // 2
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(train_size))
    assert shards[0] != sorted(shards[0])  # drawn in a shuffled order

    # Evaluation shards are disjoint too, so that no image is counted twice.
    val_seen = [r["drawn"]["val"] for r in fit]
    assert len(val_seen[0]) == len(val_seen[1]) == VAL_BATCHES * 1000
    assert set(val_seen[0]).isdisjoint(val_seen[1])
    test_seen = [r["drawn"]["test"] for r in test]
    assert sorted(test_seen[0] + test_seen[1]) == list(range(10_000))

    # (b) every rank reports the same, reduced, value ...
    assert fit[0]["metrics"] == fit[1]["metrics"]
    assert test[0]["metrics"] == test[1]["metrics"]
    summary = read_summary(run_dir)
    assert summary["test_acc"] == test[0]["metrics"]["test/acc"]
    # the spawned ranks hand back only the best path; the summary still has the score and epochs
    assert summary["val_acc_best"] == pytest.approx(fit[0]["metrics"]["val/acc"]) and summary["epochs"] == 1

    # ... equal to one process evaluating the checkpoint on the same images. After one epoch the
    # best checkpoint holds the weights that were validated. Accuracy: within a tenth of an image;
    # loss: float32 rounding of a mean of a few thousand values.
    model = cnn_lightning.load_model(summary["best_checkpoint"])
    dm = MNISTDataModule(str(mnist_dir), val_size=VAL_SIZE)
    dm.setup()
    val_images, val_labels = dm.splits["val"]
    seen = torch.tensor(val_seen[0] + val_seen[1])
    val_acc, val_loss = _evaluate(model, val_images[seen], val_labels[seen])
    assert abs(fit[0]["metrics"]["val/acc"] - val_acc) < 0.1 / len(seen)
    assert abs(fit[0]["metrics"]["val/loss"] - val_loss) < 1e-5
    test_acc, test_loss = _evaluate(model, *dm.splits["test"])
    assert abs(test[0]["metrics"]["test/acc"] - test_acc) < 0.1 / 10_000
    assert abs(test[0]["metrics"]["test/loss"] - test_loss) < 1e-5
    # Not vacuous: one rank's shard alone gives another loss, so an unreduced metric would differ.
    own = torch.tensor(val_seen[0])
    assert abs(_evaluate(model, val_images[own], val_labels[own])[1] - val_loss) > 1e-4
