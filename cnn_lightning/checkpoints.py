"""Build nets from config, and read, load and write checkpoints safely.

Loading is bounded before anything is allocated: the file must be a plain (stored, not
compressed) zip of modest size, it is read with ``torch.load(weights_only=True, mmap=True)``
(tensors and plain values only, no tensor data copied into memory), the net it names must be one
of the exact classes of ``cnn_lightning.nets`` with hyper-parameters that pass ``check_net``
(built on the meta device first: shapes and parameter count, no memory), every tensor must have
the shape and dtype that net expects, and no weight may be NaN or infinite. (Writing them safely
is ``saving.py``'s job.)
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnn_lightning import nets
from cnn_lightning.nets.layers import Normalize
from cnn_lightning.records import RecordError, read_failed, read_summary

log = logging.getLogger(__name__)

# The exact classes a config or a checkpoint may name (those cnn_lightning.nets exports), by both
# of their import paths; nothing is ever imported by a name read from a file.
NETS: dict[str, type[nn.Module]] = {}
for _cls in (getattr(nets, name) for name in nets.__all__):
    NETS[f"cnn_lightning.nets.{_cls.__name__}"] = _cls
    NETS[f"{_cls.__module__}.{_cls.__qualname__}"] = _cls

MAX_PARAMS = 20_000_000            # AlexNet-lite is ~0.5M; anything near this is a typo or an attack
MAX_INT = 1_000_000                # no hyper-parameter of these nets is larger
MAX_FILE_BYTES = 512 * 2**20       # a checkpoint of MAX_PARAMS float32 weights (+ Adam, + EMA's raw copy) fits
MAX_PICKLE_BYTES = 8 * 2**20       # data.pkl: the structure, not the tensors
INPUT_SIZE, NUM_CLASSES = 28, 10


class CheckpointError(ValueError):
    """A file that is not a usable cnn-lightning checkpoint; the message says why."""


def _check_net_value(name: str, value: Any) -> None:
    """One hyper-parameter of a net against its meaning (by its name, as the nets spell them)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_net_value(name, item)
        return
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    if name == "dropout":
        if not 0 <= value < 1:
            raise ValueError(f"{name}={value}: must be in [0, 1)")
        return
    if not isinstance(value, int):
        raise ValueError(f"{name}={value!r}: must be a whole number")
    if name == "padding":
        if not 0 <= value <= INPUT_SIZE:
            raise ValueError(f"{name}={value}: must be between 0 and {INPUT_SIZE}")
    elif name == "kernel_size":
        if not (1 <= value <= INPUT_SIZE and value % 2 == 1):
            raise ValueError(f"{name}={value}: must be odd, between 1 and {INPUT_SIZE}")
    elif name in ("num_classes", "input_size"):
        expected = NUM_CLASSES if name == "num_classes" else INPUT_SIZE
        if value != expected:
            raise ValueError(f"{name}={value}: MNIST has {expected}")
    elif not 1 <= value <= MAX_INT:
        raise ValueError(f"{name}={value}: must be between 1 and {MAX_INT:,}")


def _check_type(name: str, value: Any, default: Any) -> None:
    """``value`` has the kind of the argument's default: a whole number for an int, a number for
    a float, a string for a string, true/false for a bool, a list of whole numbers for a tuple."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (tuple, list)):
        ok = (isinstance(value, (tuple, list)) and len(value) == len(default)
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    else:
        ok = True
    if not ok:
        raise ValueError(f"{name}={value!r}: must be like its default, {default!r}")


def _geometry_hook(name: str):
    """A forward pre-hook that checks a conv's or pool's window against its input size."""

    def hook(module: nn.Module, args) -> None:
        size = args[0].shape[-1]
        k, s, p = (module.kernel_size, module.stride, module.padding)
        k, s, p = (v[0] if isinstance(v, tuple) else v for v in (k, s, p))
        out = (size - k + 2 * p) // s + 1
        if out < 1:
            raise ValueError(
                f"layer {name} ({k}x{k}, stride {s}, padding {p}) on a {size}x{size} input: "
                f"(W - F + 2P)/S + 1 = ({size} - {k} + 2*{p})/{s} + 1 = {out}, not a positive size"
            )

    return hook


def check_net(net: dict) -> nn.Module:
    """The net ``net`` describes, built on the meta device (no memory), or a ValueError saying
    which key is wrong: an exact class of ``cnn_lightning.nets``, known keyword arguments with
    sensible values, at most MAX_PARAMS parameters, and a positive size after every layer."""
    target = str(net.get("_target_", ""))
    cls = NETS.get(target)
    if cls is None:
        names = ", ".join(sorted(n for n in NETS if n.count(".") == 2))
        raise ValueError(f"_target_={target!r}: not one of cnn_lightning.nets ({names})")
    kwargs = {k: v for k, v in net.items() if k != "_target_"}
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{unknown}: not arguments of {cls.__name__} (it takes {sorted(accepted)})")
    for name, value in kwargs.items():
        _check_type(name, value, accepted[name].default)
        _check_net_value(name, value)
    try:
        with torch.device("meta"):
            model = cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:  # the net's own checks (pool type, ...)
        raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise ValueError(f"{params:,} parameters: at most {MAX_PARAMS:,}")
    hooks = [
        m.register_forward_pre_hook(_geometry_hook(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
    ]
    try:
        with torch.device("meta"):
            out = model(torch.empty(1, 1, INPUT_SIZE, INPUT_SIZE))
    except RuntimeError as err:  # shapes that do not chain (a size the hooks cannot see)
        raise ValueError(f"the layers do not fit a {INPUT_SIZE}x{INPUT_SIZE} input: {err}") from None
    finally:
        for h in hooks:
            h.remove()
    if tuple(out.shape) != (1, NUM_CLASSES):
        raise ValueError(f"the net's output has shape {tuple(out.shape)}, not (N, {NUM_CLASSES})")
    return model


def build_model(net: dict) -> nn.Sequential:
    """``Normalize`` then the net described by ``net`` (a config with ``_target_``)."""
    try:
        check_net(net)
    except ValueError as err:
        raise CheckpointError(f"net {err}") from None
    kwargs = {k: v for k, v in net.items() if k != "_target_"}
    return nn.Sequential(OrderedDict(normalize=Normalize(), net=NETS[net["_target_"]](**kwargs)))


def _check_archive(path: Path) -> None:
    """Refuse, from the zip's directory alone, anything that would make loading expensive."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes, larger than any checkpoint of this project")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): not a zip archive "
                              f"({err})") from None
    pickles = [m for m in members if m.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: not a checkpoint (it has {len(pickles)} data.pkl members, not 1)")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: its data.pkl declares {pickles[0].file_size:,} bytes, too large")
    compressed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if compressed:  # torch.save never compresses; a compressed member could inflate to any size
        raise CheckpointError(f"{path}: compressed members {compressed[:3]}, which torch.save never writes")
    declared = sum(m.file_size for m in members)
    if declared > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: its members declare {declared:,} bytes, too large")
    try:  # every member against its CRC-32: torch does not check them when it maps tensors
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {err}") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: corrupt, {damaged} fails its CRC check (truncated or corrupt?)")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's contents, or a CheckpointError naming the file and what is wrong.

    Tensors are memory-mapped from the file, not read: nothing is allocated until the caller
    copies them."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_archive(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused, it holds more than tensors and plain values ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, MemoryError, OverflowError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise CheckpointError(f"{path}: not a cnn-lightning checkpoint (no net in its hyperparameters)")
    return checkpoint


def load_model(path: str | os.PathLike) -> nn.Module:
    """The trained net from a checkpoint, in eval mode, on the CPU.

    Input: float images in [0, 1], shape (N, 1, 28, 28), white ink on black as in MNIST
    (normalisation is inside the module). Output: logits, shape (N, 10).
    """
    checkpoint = read_checkpoint(path)
    net = checkpoint["hyper_parameters"]["net"]
    try:
        expected = nn.Sequential(OrderedDict(normalize=Normalize(), net=check_net(net))).state_dict()
    except ValueError as err:
        raise CheckpointError(f"{path}: refused, its net {err}") from None
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if isinstance(k, str) and k.startswith(prefix)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the net it names (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for key, want in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            what = f"{tuple(got.shape)} {got.dtype}" if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"{path}: weights do not fit the net it names: {key} is {what}, "
                                  f"expected {tuple(want.shape)} {want.dtype}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise CheckpointError(f"{path}: refused, {key} holds NaN or infinite values")
    model = build_model(net)
    model.load_state_dict(state)  # shapes and dtypes checked above: copies, cannot fail
    return model.eval()


@dataclass(frozen=True)
class RunRecord:
    """One finished training run, as its ``summary.json`` describes it."""

    model: str
    checkpoint: Path
    val_acc: float
    test_acc: float | None
    params: int
    epochs: int
    seed: int | None
    run_dir: Path
    wall_time_s: float | None = None
    status: str = "ok"  # "ok"; "nan": no finite validation accuracy; "pruned at epoch N"; "failed: <why>"

    @property
    def usable(self) -> bool:
        return self.status == "ok"


def _failed_runs(root: Path, model: str | None) -> list[RunRecord]:
    """Jobs that ended in an error, as the sweep callback marks them (``failed.json``)."""
    records = []
    for marker in sorted(root.rglob("failed.json")):
        try:
            failed = read_failed(marker)
        except RecordError as err:
            failed = {"model": "?", "error": f"unreadable failed.json ({err})", "seed": None}
        name, error = failed["model"], failed["error"]
        if model is None or name == model:
            records.append(RunRecord(
                model=name, checkpoint=Path(""), val_acc=math.nan, test_acc=None, params=0, epochs=0,
                seed=failed["seed"], run_dir=marker.parent,
                status=f"failed: {error}",
            ))
    return records


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def find_runs(root: str | os.PathLike, model: str | None = None, include_unusable: bool = False) -> list[RunRecord]:
    """Every finished run under ``root`` (all runs and sweeps), best validation accuracy first.

    A run counts when its ``summary.json`` is readable, its validation accuracy is a finite
    number and its best checkpoint file exists; anything else is skipped with a warning, never an
    exception. With ``include_unusable``, runs whose accuracy is NaN (or missing), trials a
    study's pruner stopped and jobs that failed come after the ranked ones, marked in ``status``,
    for leaderboards.
    """
    records, unusable = [], []
    for summary_path in sorted(Path(root).rglob("summary.json")):
        try:
            summary = read_summary(summary_path)
        except RecordError as err:
            log.warning("skipping %s: not a readable run summary (%s)", summary_path, err)
            continue
        record = RunRecord(
            model=summary["model"],
            checkpoint=Path(summary["best_checkpoint"]),
            val_acc=math.nan if summary["val_acc_best"] is None else float(summary["val_acc_best"]),
            test_acc=summary["test_acc"],
            params=summary["params"],
            epochs=summary["epochs"],
            seed=summary["seed"],
            run_dir=summary_path.parent,
            wall_time_s=summary["wall_time_s"],
        )
        if model is not None and record.model != model:
            continue
        if summary["pruned_epoch"] is not None:  # kept, listed, never ranked: it did not train to the end
            unusable.append(replace(record, status=f"pruned at epoch {summary['pruned_epoch']}"))
            continue
        if not math.isfinite(record.val_acc):
            log.warning("not ranking %s: it has no finite validation accuracy", summary_path)
            unusable.append(replace(record, status="nan"))
            continue
        if not _is_file(record.checkpoint):
            log.warning("skipping %s: its checkpoint %s is gone", summary_path, record.checkpoint)
            continue
        records.append(record)
    ranked = sorted(records, key=lambda r: r.val_acc, reverse=True)
    return ranked + unusable + _failed_runs(Path(root), model) if include_unusable else ranked


def find_best(root: str | os.PathLike, model: str | None = None) -> RunRecord | None:
    """The run with the best validation accuracy under ``root`` (for ``model``, or overall)."""
    runs = find_runs(root, model)
    return runs[0] if runs else None


def best_run(outputs_root: str | os.PathLike, arch: str | None = None) -> RunRecord:
    """``find_best``, or a ``CheckpointError`` saying what to train when no finished run is found."""
    best = find_best(outputs_root, arch)
    if best is None:
        what = f"arch={arch}" if arch else "any architecture"
        raise CheckpointError(f"no finished run of {what} under {outputs_root}; train one: "
                              f"python -m cnn_lightning.train model={arch or 'tiny'}")
    return best


def choose_checkpoint(ckpt: str, arch: str | None, outputs_root: str | os.PathLike) -> Path:
    """``ckpt`` itself, or for ``ckpt=best`` the best run's checkpoint (of ``arch``, else overall)."""
    return Path(ckpt) if str(ckpt) != "best" else best_run(outputs_root, arch).checkpoint


# Architectures in the order the app lists them; any other name found is listed after these.
ARCHITECTURE_ORDER = ("lenet", "lenet_classic", "alexnet_lite", "tiny", "micro")


def architecture_sort_key(name: str) -> tuple[int, str]:
    return (ARCHITECTURE_ORDER.index(name) if name in ARCHITECTURE_ORDER else len(ARCHITECTURE_ORDER), name)


def best_per_architecture(outputs_root: str | os.PathLike) -> list[RunRecord]:
    """The best run (by validation accuracy) of every architecture found under ``outputs_root``."""
    best: dict[str, RunRecord] = {}
    for record in find_runs(outputs_root):  # best first
        best.setdefault(record.model, record)
    return sorted(best.values(), key=lambda r: architecture_sort_key(r.model))


def record_for_checkpoint(path: str | os.PathLike) -> RunRecord | None:
    """The run a checkpoint file belongs to, when it sits in a run directory with a summary."""
    path = Path(path).resolve()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not (run_dir / "summary.json").is_file():
        return None
    for record in find_runs(run_dir):
        if record.run_dir == run_dir:
            return record
    return None


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The 1-based epoch of a checkpoint named like Lightning's ``epoch03-...`` (0-based there)."""
    match = re.search(r"epoch=?(\d+)", Path(path).name)
    return int(match.group(1)) + 1 if match else None
