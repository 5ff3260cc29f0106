"""The project's environment: Optuna 4+ and SQLAlchemy 2 without hydra-optuna-sweeper, nothing
``pip check`` finds broken, and ``pip install -e .`` into an environment that already holds
SQLAlchemy 2 and Optuna 4/5 (this one) installs the project alone, downgrading nothing."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

from conftest import ROOT


def major(name: str) -> int:
    return int(importlib.metadata.version(name).split(".")[0])


def test_optuna_4_or_5_and_sqlalchemy_2_without_hydras_optuna_sweeper():
    assert major("optuna") in (4, 5) and major("sqlalchemy") == 2
    assert importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None


def test_pip_check_finds_nothing_broken():
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_installing_the_project_changes_no_installed_dependency(tmp_path):
    # --no-index: only what is installed can satisfy pyproject.toml's requirements; a pin that
    # excluded the installed SQLAlchemy 2 or Optuna 5 would fail to resolve, or list a downgrade
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet",
         "--report", str(report), "-e", str(ROOT)], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    installs = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]
    assert installs == [("cnn-lightning", "0.1.0")], installs
