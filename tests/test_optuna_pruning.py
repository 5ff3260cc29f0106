"""Pruning and old study databases, for real: short trainings through the real command line on a
real SQLite study.

A ThresholdPruner that must prune (val/acc can never reach 1.01) stops a three-epoch trial after
its first epoch: the run keeps its checkpoint and summary, the leaderboard marks it pruned and
never ranks it, and Optuna records it PRUNED. A study database written by optuna 2.10.1
(tests/data/optuna-2.10.db, made with the project's environment before this sweeper: optuna
2.10.1, SQLAlchemy 1.4) is upgraded in place and continued.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
from conftest import ROOT, read_summary, train_env

SHORT = ["trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "test=false", "~callbacks.progress_bar"]
OLD_DATABASE = ROOT / "tests" / "data" / "optuna-2.10.db"


def search(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnn_lightning.train", "hparams_search=tiny_optuna", "hydra.sweeper.n_trials=1", *SHORT,
         f"paths.log_dir={root}", *overrides],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600,
    )


def test_a_pruned_trial_stops_early_is_kept_and_never_ranked(tmp_path, mnist_dir):
    done = search(tmp_path, "trainer.max_epochs=1")  # trial 0: no pruner, trains to its end
    assert done.returncode == 0, done.stderr[-3000:]
    done = search(tmp_path, "trainer.max_epochs=3", "+hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                  "+hydra.sweeper.pruner.lower=1.01")
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="tiny_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED], states
    pruned = study.trials[1]
    assert list(pruned.intermediate_values) == [0] and pruned.user_attrs["pruned_epoch"] == 0

    folder = tmp_path / "studies" / "tiny_optuna"
    job = next(folder.glob("trial1_tiny_*"))
    summary = read_summary(job)
    assert summary["epochs"] == 1 and summary["pruned_epoch"] == 0  # stopped after the first of three epochs
    assert Path(summary["best_checkpoint"]).is_file() and (job / "checkpoints" / "last.ckpt").is_file()
    rows = {r["overrides"].split("max_epochs=")[1][0]: r for r in csv.DictReader((folder / "leaderboard.csv").open())}
    assert rows["3"]["status"] == "pruned at epoch 0" and rows["3"]["rank"] == "", rows
    assert rows["1"]["status"] == "ok" and rows["1"]["rank"] == "1", rows
    best = json.loads((folder / "best.json").read_text())
    assert best["overall"]["val_acc"] == study.best_value == study.trials[0].value


def test_pruner_with_seeds_is_refused_in_one_line(tmp_path):
    done = search(tmp_path, "hydra.sweeper.seeds=[1,2]", "+hydra.sweeper.pruner._target_=optuna.pruners.MedianPruner")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-3000:]
    assert "hydra.sweeper.pruner with hydra.sweeper.seeds" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_study_database_of_optuna_2_10_is_upgraded_and_continued(tmp_path, mnist_dir):
    database = tmp_path / "optuna.db"
    shutil.copy(OLD_DATABASE, database)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("v2.6.0.a",)
    done = search(tmp_path, "trainer.max_epochs=1", "hydra.sweeper.study_name=old_study")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "upgraded its schema from v2.6.0.a" in done.stdout + done.stderr
    study = optuna.load_study(study_name="old_study", storage=f"sqlite:///{database}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.value for t in study.trials[:2]] == [0.5, 0.9]  # optuna 2.10's trials, as written
    assert study.user_attrs["launches"] == 2  # the old launch counter goes on
    assert study.best_value == max(0.9, study.trials[2].value)
