"""Knowledge distillation: frozen teacher nets and the student's loss (no Lightning, no Qt).

``model.distill`` switches it on for ``Classifier``: ``teacher`` is a checkpoint path, a list of
them (an ensemble: the mean of their softmax) or ``best`` (the best finished run under the
outputs root when training starts, never the run being trained); ``temperature`` T > 0;
``weight`` alpha in [0, 1]. The student minimises

    (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

Teachers are loaded with ``load_model`` (the bounded, ``weights_only`` loader) once per process,
frozen, kept in eval mode and held outside the student's module tree: they are in no state_dict, checkpoint,
optimizer or layer table, and a student checkpoint loads without them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnn_lightning.checkpoints import CheckpointError, find_runs, load_model

DEFAULTS = {"teacher": None, "temperature": 4.0, "weight": 0.5}


def settings(distill: dict | None) -> dict | None:
    """``distill`` with its defaults filled in, or None when distillation is off; a ValueError
    naming the key for anything that makes no sense."""
    if distill is None:
        return None
    if not isinstance(distill, dict):
        raise ValueError(f"model.distill={distill!r}: must be a mapping with teacher, temperature, weight")
    unknown = sorted(set(distill) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"model.distill: unknown keys {unknown} (it takes {sorted(DEFAULTS)})")
    merged = {**DEFAULTS, **distill}
    teacher, temperature, weight = merged["teacher"], merged["temperature"], merged["weight"]
    if teacher in (None, "", []):
        raise ValueError("model.distill.teacher: missing; a checkpoint path, a list of paths, or best")
    teachers = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    if not all(isinstance(t, (str, os.PathLike)) and str(t) for t in teachers):
        raise ValueError(f"model.distill.teacher={teacher!r}: must be a checkpoint path, a list of paths, or best")
    for key, value, ok, allowed in (
        ("temperature", temperature, lambda v: v > 0, "in (0, inf)"),
        ("weight", weight, lambda v: 0 <= v <= 1, "in [0, 1]"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"model.distill.{key}={value!r}: must be a number {allowed}")
    return merged


def teacher_paths(teacher: Any, outputs_root: str | os.PathLike | None = None,
                  exclude: str | os.PathLike | None = None) -> list[Path]:
    """The teacher checkpoint files: ``teacher`` itself, its list, or for ``best`` the best
    finished run under ``outputs_root`` other than the run directory ``exclude``."""
    if isinstance(teacher, (str, os.PathLike)) and str(teacher) == "best":
        if outputs_root is None:
            raise CheckpointError("teacher=best needs an outputs root (cnn_lightning.train uses paths.log_dir)")
        own = Path(exclude).resolve() if exclude else None
        runs = [r for r in find_runs(outputs_root) if own is None or r.run_dir.resolve() != own]
        if not runs:
            raise CheckpointError(f"no finished run under {outputs_root} to distill from; train a teacher "
                                  f"first (python -m cnn_lightning.train model=lenet) or give its checkpoint")
        return [runs[0].checkpoint]
    teachers = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    return [Path(t) for t in teachers]


# Teacher nets read so far in this process, by (real path, size, mtime): the start-up check,
# train.py's resolve and the Classifier each ask for the teachers, and one read serves all three.
_loaded: dict[tuple[str, int, int], nn.Module] = {}


def load_teacher(path: str | os.PathLike) -> nn.Module:
    """The net in checkpoint ``path`` (``load_model``: bounded, ``weights_only``), frozen and in
    eval mode; read once per process unless the file changes."""
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return load_model(path)  # load_model says what is wrong with the path
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _loaded:
        net = load_model(path)
        for p in net.parameters():
            p.requires_grad_(False)
        _loaded[key] = net.eval()
    return _loaded[key]


class Teachers:
    """Frozen teacher nets. Not an ``nn.Module``, so a LightningModule attribute holding one
    registers nothing; deep copies (``EMAWeightAveraging`` copies the student) share it."""

    def __init__(self, paths: list[str | os.PathLike]):
        self.paths = [str(p) for p in paths]
        self.nets = [load_teacher(p) for p in self.paths]

    def __deepcopy__(self, memo: dict) -> Teachers:
        return self

    def __len__(self) -> int:
        return len(self.nets)

    @torch.no_grad()
    def probs(self, images: torch.Tensor, temperature: float) -> torch.Tensor:
        """The mean over teachers of softmax(logits / T), float32, on the images' device."""
        total = None
        for i, net in enumerate(self.nets):
            if next(net.parameters()).device != images.device:
                self.nets[i] = net = net.to(images.device)
            p = F.softmax(net(images.float()).float() / temperature, dim=1)
            total = p if total is None else total + p
        return total / len(self.nets)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, averaged over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature**2


def resolve(distill: dict | None, outputs_root: str | os.PathLike | None,
            output_dir: str | os.PathLike | None = None, ckpt_path: str | os.PathLike | None = None) -> dict | None:
    """``settings(distill)`` with ``teacher`` as the list of checkpoint files it names, checked
    with ``load_model``; None when off. ``best`` is looked up now, leaving out ``output_dir`` (the
    run being trained); a run resumed from ``ckpt_path`` keeps the teachers it started with.
    Raises ValueError (a CheckpointError for files) naming ``model.distill``'s key."""
    merged = settings(distill)
    if merged is None:
        return None
    teacher = merged["teacher"]
    if str(teacher) == "best" and ckpt_path:
        from cnn_lightning.checkpoints import read_checkpoint

        before = read_checkpoint(ckpt_path)["hyper_parameters"].get("distill")
        named = before.get("teacher") if isinstance(before, dict) else None
        if isinstance(named, list) or (isinstance(named, str) and named != "best"):
            teacher = named
    try:
        paths = teacher_paths(teacher, outputs_root, exclude=output_dir)
    except CheckpointError as err:
        raise CheckpointError(f"model.distill.teacher={teacher}: {err}") from None
    for path in paths:
        try:
            load_teacher(path)  # the whole check (bounded: file, net, weights); Teachers reuses it
        except CheckpointError as err:
            raise CheckpointError(f"model.distill.teacher: {err}") from None
    return {**merged, "teacher": [str(p) for p in paths]}
