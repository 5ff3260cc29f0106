"""Shared fixtures: the real MNIST (prepared once, in the project's data dir) and a runner for
the real training command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from cnn_lightning.config import project_root, register
from cnn_lightning.mnist_files import prepare_mnist, raw_dir

ROOT = Path(project_root())
FAST = [  # a real but short run: 60 training batches, small val/test
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=60",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
]


def compose_train(*overrides: str):
    """The training config as ``python -m cnn_lightning.train`` composes it, Hydra's own node included."""
    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's in-process trainings, as the subprocess ones get (train_env)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The project's data dir with the four verified raw files."""
    data_dir = ROOT / "data"
    prepare_mnist(data_dir)
    return data_dir


def train_env() -> dict[str, str]:
    """The environment of test trainings. One torch thread: these nets are too small for two to
    help, and on a busy 2-core machine two threads mostly wait for each other (a 160-batch run:
    190 s with two, 31 s with one)."""
    return dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")


def run_train(*overrides: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m cnn_lightning.train`` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cnn_lightning.train", *overrides],
        cwd=cwd or ROOT, env=train_env(), capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir) -> Path:
    """The run directory of one short real training of the tiny net."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    result = run_train(*FAST, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="session")
def mnist_test(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The official test images (uint8, 10000 x 28 x 28) and labels, read from the verified raw
    files (the IDX format: a 16- or 8-byte header, then the bytes)."""
    raw = raw_dir(mnist_dir)
    images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8).astype(np.int64)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    return images, labels
