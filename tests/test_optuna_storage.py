"""Optuna studies kept in SQLite: a search run again continues its study, two processes share one,
job folders are named by trial number, and the leaderboard covers the whole study. Real short
trainings through the real command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, read_summary, train_env

SEARCH = [  # one trial of a real but very short training
    "hparams_search=tiny_optuna", "hydra.sweeper.n_trials=1", "trainer.max_epochs=1",
    "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "test=false", "~callbacks.progress_bar",
]


def start_search(root: Path) -> subprocess.Popen:
    """The search with everything under ``root``: the study in root/optuna.db, runs in root/studies/."""
    return subprocess.Popen(
        [sys.executable, "-m", "cnn_lightning.train", *SEARCH, f"paths.log_dir={root}"],
        cwd=ROOT, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-2000:] + err[-3000:]


def load(root: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny_optuna", storage=f"sqlite:///{root}/optuna.db")


def check_study_folder(root: Path, study: optuna.Study) -> None:
    """One job folder per trial, named by its number, and a leaderboard of every trial."""
    folder = root / "studies" / "tiny_optuna"
    jobs = {int(p.name.split("_", 1)[0].removeprefix("trial")): p for p in folder.glob("trial*_tiny_*")}
    assert sorted(jobs) == [t.number for t in study.trials]
    for trial in study.trials:
        assert read_summary(jobs[trial.number])["val_acc_best"] == pytest.approx(trial.value)
    rows = list(csv.DictReader((folder / "leaderboard.csv").open()))
    assert len(rows) == len(study.trials)
    best = json.loads((folder / "best.json").read_text())
    assert best["overall"]["val_acc"] == pytest.approx(study.best_value)


def test_running_a_search_again_continues_its_study(tmp_path, mnist_dir):
    finish(start_search(tmp_path))
    assert len(load(tmp_path).trials) == 1
    finish(start_search(tmp_path))
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # the second launch samples anew instead of repeating the first one's start-up trial
    assert study.trials[0].params != study.trials[1].params
    check_study_folder(tmp_path, study)


def test_two_processes_run_one_new_study_side_by_side(tmp_path, mnist_dir):
    processes = [start_search(tmp_path), start_search(tmp_path)]  # both find no database yet
    for process in processes:
        finish(process)
    study = load(tmp_path)
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[0].params != study.trials[1].params
    check_study_folder(tmp_path, study)
