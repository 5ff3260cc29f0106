"""The benchmarks' epoch timer: a Lightning callback, used in-process (lightning_overhead.py) and
added to a training run by config (callback_overhead.py: ``+callbacks.epoch_timer._target_=
timing.EpochTimer`` with ``benchmarks/`` on PYTHONPATH)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


def sync(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class EpochTimer(L.Callback):
    """Wall and CPU time of every training epoch (validation included) and of testing, kept in
    ``records`` and, given a ``path``, appended there as JSON lines. CPU time (all threads of this
    process) is what other load on a shared machine disturbs least. Under
    ``trainer.profiler=simple`` each epoch's record also holds the seconds spent in every callback
    hook during that epoch (Lightning's profiler times each ``[Callback]<name>.<hook>`` call).
    On a CUDA ``device`` the GPU is synchronised before each reading."""

    def __init__(self, path: str | None = None, device: torch.device | str | None = None):
        self.path = Path(path) if path else None
        self.device = device
        self.records: list[dict] = []
        self._start = (0.0, 0.0)
        self._hooks: dict[str, float] = {}

    @property
    def epochs(self) -> list[dict]:
        return [r for r in self.records if r["stage"] == "epoch"]

    @staticmethod
    def _hook_totals(trainer) -> dict[str, float]:
        durations = getattr(trainer.profiler, "recorded_durations", {})
        return {k: float(sum(v)) for k, v in durations.items() if k.startswith("[Callback]")}

    def _begin(self, trainer) -> None:
        sync(self.device)
        self._start = (time.perf_counter(), time.process_time())
        self._hooks = self._hook_totals(trainer)

    def _write(self, trainer, record: dict) -> None:
        if not trainer.is_global_zero:
            return
        sync(self.device)
        record["seconds"] = time.perf_counter() - self._start[0]
        record["cpu_seconds"] = time.process_time() - self._start[1]
        hooks = {k: v - self._hooks.get(k, 0.0) for k, v in self._hook_totals(trainer).items()}
        record["hooks"] = {k: v for k, v in hooks.items() if v > 0}
        self.records.append(record)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._begin(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._write(trainer, {"stage": "start"})  # from setup to the first batch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._begin(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._write(trainer, {"stage": "epoch", "epoch": trainer.current_epoch})

    def on_test_start(self, trainer, pl_module) -> None:
        self._begin(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, {"stage": "test"})
