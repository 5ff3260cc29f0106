"""MNIST as a LightningDataModule that keeps every split in memory as one uint8 tensor.

A batch is one indexing op on that tensor with a slice of a shuffled permutation: no per-image
Python work, no worker processes. On a GPU the tensors live in GPU memory and augmentation runs
there too. Under distributed training each rank reads its own shard of every epoch's permutation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.datasets import MNIST

from cnn_lightning.config import to_plain
from cnn_lightning.mnist_files import prepare_mnist

TRAIN_SIZE = 60_000


class ShardedBatchSampler:
    """Index batches of one epoch for one rank: a seeded permutation, split across ranks.

    The permutation depends on (seed, epoch) only, so every rank draws the same one and takes a
    disjoint stride of it, and a resumed run replays the epochs of an uninterrupted one.
    """

    def __init__(self, size, batch_size, shuffle, seed=0, rank=0, world_size=1, drop_last=False):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        # Equal shard sizes on every rank, or collective ops would wait forever; training drops
        # the remainder, evaluation pads by repeating indices (as DistributedSampler does).
        self.shard_size = (
            size // world_size if drop_last else math.ceil(size / world_size)
        )

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def shard(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        total = self.shard_size * self.world_size
        if total > self.size:
            order = torch.cat([order, order[: total - self.size]])
        return order[self.rank : total : self.world_size]

    def __iter__(self):
        return iter(self.shard().split(self.batch_size))

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)


class InMemoryBatches:
    """An iterable of (images, labels) batches drawn from tensors by a ShardedBatchSampler."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sampler: ShardedBatchSampler):
        self.images, self.labels = images, labels
        # Lightning treats an object with these two attributes like a DataLoader: it calls
        # sampler.set_epoch(epoch) before every epoch.
        self.sampler, self.batch_sampler = sampler, None
        self.consumed = 0  # batches of the current epoch that training has used
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches done) of a mid-epoch checkpoint

    def __iter__(self):
        skip = 0
        if self.resume_at is not None and self.resume_at[0] == self.sampler.epoch:
            skip = self.resume_at[1]  # the interrupted epoch: its first batches are done
        self.resume_at, self.consumed = None, skip
        for i, index in enumerate(self.sampler):
            if i < skip:
                continue
            index = index.to(self.images.device, non_blocking=True)
            yield self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.sampler)


@dataclass
class Augment:
    """Random affine per sample: rotation (degrees), translation (fraction of size), scale; and,
    when ``elastic_alpha`` > 0, an elastic distortion per sample (Simard et al. 2003): a random
    displacement field, uniform in [-1, 1] per pixel, smoothed by a Gaussian of ``elastic_sigma``
    pixels and scaled by ``elastic_alpha`` pixels (their MNIST values: sigma 4, alpha 34)."""

    enabled: bool = True
    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return images
        n, device = images.shape[0], images.device

        def uniform(low, high):
            return torch.empty(n, device=device).uniform_(low, high)

        angle = torch.deg2rad(uniform(-self.degrees, self.degrees))
        scale = uniform(*self.scale)
        # affine_grid maps output to input coordinates in [-1, 1], so translation t of the image
        # is -2t there, and a zoom by s is a grid scaled by 1/s.
        shift = uniform(-self.translate, self.translate), uniform(-self.translate, self.translate)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin, -2 * shift[0]], dim=1),
                torch.stack([sin, cos, -2 * shift[1]], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        if self.elastic_alpha > 0:
            grid = grid + self.elastic_displacement(images)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def elastic_displacement(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 2) offsets in grid_sample's [-1, 1] units, one smooth field per sample.

        torchvision's ElasticTransform draws one field per call (per batch here); this draws one
        per image and adds it to the affine grid, so both warps cost a single resampling.
        """
        n, _, h, w = images.shape
        field = torch.empty(n, 2, h, w, device=images.device).uniform_(-1, 1)
        # The Gaussian blur (zero beyond the border, truncated at 3 sigma) as two small matrix
        # products, rows then columns: 0.7 ms for a batch of 128 on one CPU thread, against 45 ms
        # for a 2-D convolution with the same kernel.
        rows = self._blur_matrix(h, images.device)
        columns = rows if w == h else self._blur_matrix(w, images.device)
        field = rows @ field @ columns.T
        # pixels -> [-1, 1] units: the image spans 2 units over w (x) and h (y) pixels
        unit = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
        return field.permute(0, 2, 3, 1) * (self.elastic_alpha * unit)

    def _blur_matrix(self, size: int, device: torch.device) -> torch.Tensor:
        i = torch.arange(size, device=device, dtype=torch.float32)
        offset = i[:, None] - i[None, :]
        radius = math.ceil(3 * self.elastic_sigma)
        taps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
        weights = torch.exp(-0.5 * (offset / self.elastic_sigma) ** 2) * (offset.abs() <= radius)
        return weights / torch.exp(-0.5 * (taps / self.elastic_sigma) ** 2).sum()


class MNISTDataModule(L.LightningDataModule):
    """The official 10k test set; ``val_size`` images held out of the 60k training images."""

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5_000,
        split_seed: int = 12345,
        download: bool = True,
        augment: Augment | dict | None = None,
    ):
        super().__init__()
        augment = asdict(augment) if isinstance(augment, Augment) else to_plain(augment)
        self.save_hyperparameters()  # plain values only: checkpoints load with weights_only=True
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch sizes must be positive, got {batch_size}, {eval_batch_size}")
        if not 0 < val_size < TRAIN_SIZE:
            raise ValueError(f"val_size must be between 1 and {TRAIN_SIZE - 1}, got {val_size}")
        self.data_dir, self.download = data_dir, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.augment = Augment(**(augment or {}))
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train: InMemoryBatches | None = None
        self._resume_at: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        # Saved in every checkpoint: a checkpoint written mid-epoch (SIGTERM) resumes at the
        # next batch of the same permutation instead of restarting the epoch.
        if self._train is None:
            return {}
        return {"epoch": self._train.sampler.epoch, "train_batches_done": self._train.consumed}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" in state:
            self._resume_at = (int(state["epoch"]), int(state["train_batches_done"]))
            if self._train is not None:  # built already (to count the steps for the scheduler)
                self._train.resume_at, self._resume_at = self._resume_at, None

    def prepare_data(self) -> None:
        prepare_mnist(self.data_dir, download=self.download)

    def split_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) indices into the 60k training images; fixed by ``split_seed``."""
        order = torch.randperm(TRAIN_SIZE, generator=torch.Generator().manual_seed(self.split_seed))
        return order[self.val_size :].sort().values, order[: self.val_size].sort().values

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        prepare_mnist(self.data_dir, download=self.download)  # cheap when done; ranks > 0 need it
        train = MNIST(self.data_dir, train=True)
        test = MNIST(self.data_dir, train=False)
        train_idx, val_idx = self.split_indices()
        device = self._device()
        self.splits = {
            "train": (train.data[train_idx], train.targets[train_idx]),
            "val": (train.data[val_idx], train.targets[val_idx]),
            "test": (test.data, test.targets),
        }
        # (N, 28, 28) uint8 -> (N, 1, 28, 28), on the training device when it is an accelerator.
        self.splits = {
            k: (x.unsqueeze(1).contiguous().to(device), y.to(device)) for k, (x, y) in self.splits.items()
        }

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _batches(self, split: str, batch_size: int, train: bool) -> InMemoryBatches:
        images, labels = self.splits[split]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        epoch_seed = torch.initial_seed() % (2**31) if train else 0
        if train and world > 1:  # one permutation for all ranks, or their shards would overlap
            epoch_seed = trainer.strategy.broadcast(epoch_seed)
        sampler = ShardedBatchSampler(
            len(images), batch_size, shuffle=train, seed=epoch_seed, rank=rank,
            world_size=world, drop_last=train,
        )
        return InMemoryBatches(images, labels, sampler)

    def train_dataloader(self):
        self._train = self._batches("train", self.batch_size, train=True)
        self._train.resume_at, self._resume_at = self._resume_at, None
        return self._train

    def val_dataloader(self):
        return self._batches("val", self.eval_batch_size, train=False)

    def test_dataloader(self):
        return self._batches("test", self.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not isinstance(batch, (tuple, list)):  # the model summary's example input, not data
            return batch
        images, labels = batch
        images = images.float().div_(255)  # the contract of every net: floats in [0, 1]
        if self.trainer is not None and self.trainer.training:
            images = self.augment(images)
            if self._train is not None:
                self._train.consumed += 1
        return images, labels.long()
