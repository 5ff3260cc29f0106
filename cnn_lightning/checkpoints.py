"""Build nets from config, and load trained ones from checkpoints safely.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
file carrying code is refused. The net class named in a checkpoint must live in
``cnn_lightning.nets``, so a checkpoint cannot make us construct anything else.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from torch import nn

from cnn_lightning.nets.layers import Normalize

log = logging.getLogger(__name__)

NETS_PACKAGE = "cnn_lightning.nets."


class CheckpointError(ValueError):
    """A file that is not a usable cnn-lightning checkpoint; the message says why."""


def build_model(net: dict) -> nn.Sequential:
    """``Normalize`` then the net described by ``net`` (a config with ``_target_``)."""
    target = str(net.get("_target_", ""))
    if not target.startswith(NETS_PACKAGE):
        raise CheckpointError(f"net {target!r} is not one of {NETS_PACKAGE}*")
    cls = hydra.utils.get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"{target!r} is not a network class")
    kwargs = {k: v for k, v in net.items() if k != "_target_"}
    return nn.Sequential(OrderedDict(normalize=Normalize(), net=cls(**kwargs)))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's contents, or a CheckpointError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused, it holds more than tensors and plain values ({err})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    net = checkpoint.get("hyper_parameters", {}).get("net")
    if not isinstance(net, dict):
        raise CheckpointError(f"{path}: not a cnn-lightning checkpoint (no net in its hyperparameters)")
    return checkpoint


def load_model(path: str | os.PathLike) -> nn.Module:
    """The trained net from a checkpoint, in eval mode, on the CPU.

    Input: float images in [0, 1], shape (N, 1, 28, 28), white ink on black as in MNIST
    (normalisation is inside the module). Output: logits, shape (N, 10).
    """
    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint["hyper_parameters"]["net"])
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the net it names: {err}") from err
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


def find_runs(root: str | os.PathLike, model: str | None = None) -> list[RunRecord]:
    """Every finished run under ``root`` (all runs and sweeps), best validation accuracy first.

    A run counts when its ``summary.json`` is readable and its best checkpoint file exists;
    anything else is skipped with a warning, never an exception.
    """
    records = []
    for summary_path in sorted(Path(root).rglob("summary.json")):
        try:
            summary = json.loads(summary_path.read_text())
            record = RunRecord(
                model=str(summary["model"]),
                checkpoint=Path(summary["best_checkpoint"]),
                val_acc=float(summary["val_acc_best"]),
                test_acc=None if summary.get("test_acc") is None else float(summary["test_acc"]),
                params=int(summary.get("params", 0)),
                epochs=int(summary.get("epochs", 0)),
                seed=summary.get("seed"),
                run_dir=summary_path.parent,
                wall_time_s=summary.get("wall_time_s"),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping %s: not a readable run summary (%s)", summary_path, err)
            continue
        if not record.checkpoint.is_file():
            log.warning("skipping %s: its checkpoint %s is gone", summary_path, record.checkpoint)
            continue
        if model is None or record.model == model:
            records.append(record)
    return sorted(records, key=lambda r: r.val_acc, reverse=True)


def find_best(root: str | os.PathLike, model: str | None = None) -> RunRecord | None:
    """The run with the best validation accuracy under ``root`` (for ``model``, or overall)."""
    runs = find_runs(root, model)
    return runs[0] if runs else None


def choose_checkpoint(ckpt: str, arch: str | None, outputs_root: str | os.PathLike) -> Path:
    """``ckpt`` itself, or for ``ckpt=best`` the best run's checkpoint (of ``arch``, else overall).

    Raises ``CheckpointError`` saying what to train when no finished run is found.
    """
    if str(ckpt) != "best":
        return Path(ckpt)
    best = find_best(outputs_root, arch)
    if best is None:
        what = f"arch={arch}" if arch else "any architecture"
        raise CheckpointError(f"no finished run of {what} under {outputs_root}; train one: "
                              f"python -m cnn_lightning.train model={arch or 'tiny'}")
    return best.checkpoint


# Architectures in the order the app lists them; any other name found is listed after these.
ARCHITECTURE_ORDER = ("lenet", "lenet_classic", "alexnet_lite", "tiny")


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
