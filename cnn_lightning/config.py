"""The typed schema of the training config, and the resolvers it uses.

Hydra merges ``conf/`` onto these dataclasses, so a wrong type (``trainer.max_epochs=abc``) or an
unknown key fails before anything runs, with a message naming the key.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


def project_root() -> str:
    """The source checkout this package lives in, else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return str(here) if (here / "conf" / "train.yaml").is_file() else os.getcwd()


# Overrides that say where things go or switch off display (or, like `model`, stand in the
# directory name already): not part of the short name.
NOT_IN_RUN_NAME = {"model", "ckpt_path", "paths.root_dir", "paths.log_dir", "paths.data_dir", "callbacks.progress_bar", "hparams_search", "experiment"}


def run_name(overrides: Any, limit: int = 100) -> str:
    """A short, path-safe name for a sweep job from its overrides: ``lr-0.01_seed-2``.

    Keys shrink to their last part and numbers to 4 significant digits, so that an Optuna
    trial's long floats still make a valid (<= ``limit`` characters) directory name.
    """
    parts = []
    for override in overrides or []:
        key, _, value = str(override).lstrip("+~").partition("=")
        if key in NOT_IN_RUN_NAME or key.startswith("hydra."):
            continue
        with contextlib.suppress(ValueError):  # not a number: keep it as it is
            value = f"{float(value):.4g}" if any(c in value for c in ".eE") else value
        parts.append(f"{key.rsplit('.', 1)[-1]}-{value}")
    name = re.sub(r"[^\w.+-]", "", "_".join(sorted(parts)))
    return name[:limit] or "defaults"


def to_plain(value: Any) -> Any:
    """Plain dicts and lists instead of OmegaConf containers: checkpoints that store them load
    with ``torch.load(weights_only=True)``."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


@dataclass
class AugmentConf:
    enabled: bool = True
    degrees: float = 10.0
    translate: float = 0.1
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])


@dataclass
class DataConf:
    _target_: str = "cnn_lightning.data.MNISTDataModule"
    data_dir: str = MISSING
    batch_size: int = 128
    eval_batch_size: int = 1000
    val_size: int = 5000
    split_seed: int = 12345
    download: bool = True
    augment: AugmentConf = field(default_factory=AugmentConf)


@dataclass
class TrainerConf:
    """The Trainer arguments this project sets or that users commonly override."""

    _target_: str = "lightning.pytorch.Trainer"
    default_root_dir: str | None = None
    accelerator: str = "auto"
    strategy: Any = "auto"
    devices: Any = 1
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int = 15
    min_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: Any = None
    benchmark: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    detect_anomaly: bool = False
    sync_batchnorm: bool = False
    profiler: str | None = None


@dataclass
class PathsConf:
    root_dir: str = MISSING
    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConf:
    data: DataConf = field(default_factory=DataConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    paths: PathsConf = field(default_factory=PathsConf)
    model: Any = MISSING
    callbacks: Any = field(default_factory=dict)
    logger: Any = None
    seed: int = 42
    ckpt_path: str | None = None
    test: bool = True


def register() -> None:
    """Make ``train_schema`` and the ``project_root`` resolver known to Hydra (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConf)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)
        OmegaConf.register_new_resolver("run_name", run_name)
