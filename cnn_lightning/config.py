"""The typed schema of the training config, and the resolvers it uses.

Hydra merges ``conf/`` onto these dataclasses, so a wrong type (``trainer.max_epochs=abc``) or an
unknown key fails before anything runs, with a message naming the key.
"""

from __future__ import annotations

import contextlib
import math
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


def override_key(override: str) -> str:
    """The key a command-line override sets: ``seed`` for ``seed=2``, ``+a.b=1`` and ``~a.b``."""
    return str(override).split("=", 1)[0].lstrip("+~")


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


def native_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where ``accelerator`` (as Lightning would pick it for ``auto``) computes
    bfloat16 natively, else ``32-true``: on a CPU without bf16 instructions autocast is slower."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if accelerator == "cpu" or (accelerator == "auto" and not torch.backends.mps.is_available()):
        # AVX512-BF16 / AMX (Intel Cooper Lake and later, AMD Zen 4 and later): oneDNN's bf16 kernels
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return "bf16-mixed" if native else "32-true"
    return "32-true"


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
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0


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
    max_params: int | None = None  # the net's parameter budget (tiny 7,999, micro 4,999); None: none


@dataclass
class ChosenCheckpointConf:
    """What evaluate, export and predict share: a checkpoint file, or the best run found."""

    paths: PathsConf = field(default_factory=PathsConf)
    ckpt: str = "best"
    arch: str | None = None
    outputs_root: str = MISSING


@dataclass
class EvaluateConf(ChosenCheckpointConf):
    data: DataConf = field(default_factory=DataConf)
    ensemble: bool = False
    ensemble_per_model: int = 3
    ensemble_seed: int | None = None
    ensemble_models: Any = None  # a list of nets; check_evaluate_config says what else is wrong
    worst: int = 32
    device: str = "auto"


@dataclass
class ExportConf(ChosenCheckpointConf):
    data: DataConf = field(default_factory=DataConf)
    format: str = "onnx"
    output: str | None = None
    check: bool = True
    tolerance: float = 1.0e-4


@dataclass
class PredictConf(ChosenCheckpointConf):
    batch_size: int = 256


def register() -> None:
    """Make the schemas and the project's resolvers known to Hydra (idempotent)."""
    store = ConfigStore.instance()
    for name, node in (("train", TrainConf), ("evaluate", EvaluateConf), ("export", ExportConf), ("predict", PredictConf)):
        store.store(name=f"{name}_schema", node=node)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", project_root)
        OmegaConf.register_new_resolver("run_name", run_name)
        OmegaConf.register_new_resolver("native_precision", native_precision)


class ConfigError(ValueError):
    """A config value that makes no sense; the message names the key, the value and what is allowed."""


TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000


def check_number(cfg: DictConfig, key: str, low=None, high=None, *, low_open=False, high_open=False,
            whole=False, what: str = "") -> None:
    """Refuse ``cfg[key]`` unless it is a finite number in [low, high] (open ends where asked)."""
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    allowed = ("a whole number" if whole else "a number") + (f" {what}" if what else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value}: must be finite")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{key}={value}: must be in {bounds}{f' ({what})' if what else ''}")


def _check_optimizer_and_scheduler(cfg: DictConfig) -> None:
    for group in ("model.optimizer", "model.scheduler"):
        node = OmegaConf.select(cfg, group)
        if node is None:
            continue
        for key in node:
            full = f"{group}.{key}"
            if key in ("lr", "max_lr", "initial_lr"):
                check_number(cfg, full, 0, None, low_open=True, what="a learning rate")
            elif key in ("min_lr", "eta_min", "weight_decay", "eps", "patience", "threshold"):
                check_number(cfg, full, 0, None)
            elif key in ("momentum", "dampening"):
                check_number(cfg, full, 0, 1, high_open=True)
            elif key in ("pct_start", "factor", "gamma"):
                check_number(cfg, full, 0, 1, low_open=True, high_open=key == "factor")
            elif key in ("step_size", "T_max", "T_0", "total_steps", "epochs", "steps_per_epoch"):
                check_number(cfg, full, 1, None, whole=True)
            elif key in ("div_factor", "final_div_factor"):
                check_number(cfg, full, 0, None, low_open=True)
            elif key == "betas":
                for i in range(len(node[key])):
                    check_number(cfg, f"{full}.{i}", 0, 1, high_open=True)


def net_config_error(err: ValueError) -> ConfigError:
    """check_net's message as the config key it is about: "kernel_size=4: ..." is model.net's."""
    joint = "." if re.match(r"^\w+=", str(err)) else ": "
    return ConfigError(f"model.net{joint}{err}")


def check_train_config(cfg: DictConfig) -> None:
    """Every numeric value of a training config against its meaning, before any data is read or
    any model is built: a ConfigError naming the key, its value and what is allowed."""
    from cnn_lightning.checkpoints import CheckpointError, check_net, load_model

    check_model_node(cfg)
    _check_trainer_choices(cfg)
    check_number(cfg, "seed", 0, 2**32 - 1, whole=True)
    val_size = OmegaConf.select(cfg, "data.val_size")
    check_number(cfg, "data.val_size", 1, TRAIN_IMAGES - 1, whole=True, what="images held out of the 60,000")
    devices = OmegaConf.select(cfg, "trainer.devices")
    ranks = (devices if isinstance(devices, int) and devices > 0 else 1) * (OmegaConf.select(cfg, "trainer.num_nodes") or 1)
    per_rank = (TRAIN_IMAGES - val_size) // ranks
    check_number(cfg, "data.batch_size", 1, per_rank, whole=True,
            what=f"at most the training split, {TRAIN_IMAGES:,} - data.val_size={val_size:,}"
                 + (f", over {ranks} processes" if ranks > 1 else ""))
    check_number(cfg, "data.eval_batch_size", 1, TEST_IMAGES, whole=True, what="at most the 10,000 test images")
    check_data_dir(cfg)
    check_number(cfg, "data.augment.degrees", 0, 180)
    check_number(cfg, "data.augment.translate", 0, 1)
    check_number(cfg, "data.augment.elastic_alpha", 0, 100, what="in pixels")
    check_number(cfg, "data.augment.elastic_sigma", 0, 28, low_open=True, what="in pixels")
    scale = OmegaConf.select(cfg, "data.augment.scale")
    if scale is not None:
        if len(scale) != 2:
            raise ConfigError(f"data.augment.scale={list(scale)}: must be [low, high]")
        for i in range(2):
            check_number(cfg, f"data.augment.scale.{i}", 0, 10, low_open=True)
        if scale[0] > scale[1]:
            raise ConfigError(f"data.augment.scale={list(scale)}: low must not exceed high")

    max_steps = OmegaConf.select(cfg, "trainer.max_steps")
    if not (max_steps and max_steps > 0 and OmegaConf.select(cfg, "trainer.max_epochs") == -1):
        check_number(cfg, "trainer.max_epochs", 1, 100_000, whole=True, what="epochs; -1 only with trainer.max_steps")
    check_number(cfg, "trainer.min_epochs", 0, OmegaConf.select(cfg, "trainer.max_epochs"), whole=True)
    check_number(cfg, "trainer.max_steps", -1, None, whole=True)
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps", "num_nodes"):
        check_number(cfg, f"trainer.{key}", 1, None, whole=True)
    check_number(cfg, "trainer.num_sanity_val_steps", -1, None, whole=True)
    check_number(cfg, "trainer.gradient_clip_val", 0, None)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches"):
        value = OmegaConf.select(cfg, f"trainer.{key}")
        if isinstance(value, float):
            check_number(cfg, f"trainer.{key}", 0, 1, what="a fraction, or a whole number of batches")
        elif value is not None:
            check_number(cfg, f"trainer.{key}", 0, None, whole=True, what="batches, or a fraction in [0, 1]")
    if isinstance(devices, int) and not isinstance(devices, bool) and not (devices >= 1 or devices == -1):
        raise ConfigError(f"trainer.devices={devices}: must be at least 1, -1 (all), 'auto' or a list")

    check_number(cfg, "model.label_smoothing", 0, 1, high_open=True)
    check_number(cfg, "model.l1", 0, None)
    interval = OmegaConf.select(cfg, "model.scheduler_interval")
    if interval is not None and interval not in ("step", "epoch"):
        raise ConfigError(f"model.scheduler_interval={interval!r}: must be 'step' or 'epoch'")
    _check_optimizer_and_scheduler(cfg)
    net = OmegaConf.select(cfg, "model.net")
    if net is not None:
        try:
            built = check_net(to_plain(net))
        except ValueError as err:
            raise net_config_error(err) from None
        _check_budget(cfg, built)
    if cfg.get("ckpt_path"):
        try:
            load_model(cfg.ckpt_path)  # bounded, and small: the whole check, NaN weights included
        except CheckpointError as err:
            raise ConfigError(f"ckpt_path: {err}") from None
    distill_settings(cfg)


def check_data_dir(cfg: DictConfig) -> None:
    """MNIST's raw files are in ``data.data_dir``, or can be put there (they are verified later)."""
    from cnn_lightning.mnist_files import RAW_SHA256, raw_dir
    from cnn_lightning.prechecks import check_writable_dir

    data_dir = OmegaConf.select(cfg, "data.data_dir")
    if not data_dir or all((raw_dir(data_dir) / name).is_file() for name in RAW_SHA256):
        return
    try:
        check_writable_dir("data.data_dir", raw_dir(data_dir))
    except ConfigError as err:
        raise ConfigError(f"MNIST is not in {raw_dir(data_dir)} and {str(err).split(': ', 1)[1]}: point "
                          "data.data_dir (or paths.data_dir) at a writable directory, or put the verified files there") from None


def check_model_chosen(argv: list[str]) -> None:
    """A ConfigError for ``model=null`` (or ``~model``): every command that builds a net needs one."""
    from cnn_lightning.prechecks import config_groups
    if any(a in ("~model", "model=null", "model=none", "model=None", "model=") for a in argv):
        raise ConfigError(f"model=null: choose a net, one of conf/model/ ({', '.join(sorted(config_groups()['model']))})")


def check_model_node(cfg: DictConfig) -> None:
    """``model`` is one of conf/model's configs: a mapping with a name and a ``net`` mapping."""
    from cnn_lightning.prechecks import config_groups
    model = cfg.get("model") if not OmegaConf.is_missing(cfg, "model") else None
    if not isinstance(model, DictConfig):
        raise ConfigError(f"model={model}: choose a net, one of conf/model/ ({', '.join(sorted(config_groups()['model']))})")
    net = model.get("net")
    if not isinstance(net, DictConfig):
        raise ConfigError(f"model.net={net}: must be a net's config (a mapping of its layer sizes), e.g. model=tiny")
    if not isinstance(model.get("name"), str):
        raise ConfigError(f"model.name={model.get('name')}: must be the net's name")
    for group in ("callbacks", "logger"):
        node = cfg.get(group)
        entries = node.items() if group == "callbacks" and isinstance(node, DictConfig) else [(None, node)]
        for name, entry in entries:
            key = f"{group}.{name}" if name else group
            if entry is not None and not (isinstance(entry, DictConfig) and isinstance(entry.get("_target_"), str)):
                raise ConfigError(f"{key}={entry}: not a {group[:-1] if name else group} config (a mapping with _target_); "
                                  f"choose one of conf/{group}/")
    distill = model.get("distill")
    if distill is not None and not isinstance(distill, DictConfig):
        raise ConfigError(f"model.distill={distill}: must be a mapping (teacher, temperature, weight)")


PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16")


def _check_trainer_choices(cfg: DictConfig) -> None:
    """The Trainer's named choices, checked as Lightning would check them once training starts:
    precision, accelerator (and whether this machine has it), strategy and validation interval."""
    import torch
    from lightning.pytorch.strategies import StrategyRegistry

    precision = OmegaConf.select(cfg, "trainer.precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision}: must be one of {', '.join(PRECISIONS)}")
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    available = {"auto": True, "cpu": True, "gpu": torch.cuda.is_available(), "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    if accelerator not in available:
        raise ConfigError(f"trainer.accelerator={accelerator}: must be one of {', '.join(available)}")
    if not available[accelerator]:
        raise ConfigError(f"trainer.accelerator={accelerator}: no {accelerator.upper()} device on this machine; "
                          "use trainer=cpu or trainer.accelerator=auto")
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if isinstance(strategy, str) and strategy != "auto" and strategy not in StrategyRegistry.available_strategies():
        raise ConfigError(f"trainer.strategy={strategy}: not a strategy Lightning knows (auto, ddp, ddp_spawn, ...)")
    max_time = OmegaConf.select(cfg, "trainer.max_time")
    if max_time is not None and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", str(max_time)):
        raise ConfigError(f"trainer.max_time={max_time}: must be DD:HH:MM:SS, e.g. 00:01:30:00")
    profiler = OmegaConf.select(cfg, "trainer.profiler")
    if profiler is not None and profiler not in ("simple", "advanced", "pytorch", "xla"):
        raise ConfigError(f"trainer.profiler={profiler}: must be simple, advanced, pytorch or xla")
    deterministic = OmegaConf.select(cfg, "trainer.deterministic")
    if deterministic not in (None, True, False, "warn"):
        raise ConfigError(f"trainer.deterministic={deterministic}: must be true, false or warn")
    devices = OmegaConf.select(cfg, "trainer.devices")
    if isinstance(devices, str) and devices != "auto" and not re.fullmatch(r"-1|\d+|(\d+,)*\d+,?", devices):
        raise ConfigError(f"trainer.devices={devices}: must be a count, -1 (all), auto, or device indices like 0,1")
    interval = OmegaConf.select(cfg, "trainer.val_check_interval")
    if isinstance(interval, float):
        check_number(cfg, "trainer.val_check_interval", 0, 1, low_open=True, what="a fraction of an epoch, or whole batches")
    elif interval is not None:
        check_number(cfg, "trainer.val_check_interval", 1, None, whole=True, what="batches, or a fraction of an epoch")


def _check_budget(cfg: DictConfig, net) -> None:
    """A ConfigError when the net has more trainable parameters than ``max_params``: the count
    the product promises for tiny and micro, kept however the widths are overridden or searched."""
    budget = cfg.get("max_params")
    if budget is None:
        return
    check_number(cfg, "max_params", 1, None, whole=True)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if params > budget:
        name = OmegaConf.select(cfg, "model.name") or "the net"
        raise ConfigError(f"{name}: {params:,} trainable parameters, over its budget max_params={budget:,}; "
                          "narrow its layers, or lift the budget with max_params=null")


def distill_settings(cfg: DictConfig) -> dict | None:
    """``model.distill`` checked, with defaults, its teachers as files (``best`` looked up now,
    under ``paths.log_dir``, leaving out this run); None when off. A ConfigError otherwise."""
    from cnn_lightning import distill

    block = OmegaConf.select(cfg, "model.distill")
    if block is None:
        return None
    try:
        return distill.resolve(to_plain(block), OmegaConf.select(cfg, "paths.log_dir"),
                               OmegaConf.select(cfg, "paths.output_dir"), cfg.get("ckpt_path"))
    except ValueError as err:  # CheckpointError included: the file's own message
        raise ConfigError(str(err)) from None
