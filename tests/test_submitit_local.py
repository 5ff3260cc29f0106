"""A study search through submitit, for real: ``hydra/launcher=submitit_local`` (hydra-submitit-
launcher's config; its executor runs each job as its own process on this machine, through the
same pickled job submitit sends to SLURM with hydra/launcher=slurm). The same job folders, named
by trial number, the leaderboard and best.json come out, and submitit's own logs beside them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import optuna
import pytest
from conftest import ROOT, read_summary, train_env


def test_a_study_search_through_submitits_local_executor(tmp_path, mnist_dir):
    done = subprocess.run(
        [sys.executable, "-m", "cnn_lightning.train", "hparams_search=tiny_optuna", "hydra/launcher=submitit_local",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.n_jobs=2", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
         "trainer.limit_val_batches=1", "test=false", "~callbacks.progress_bar", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name="tiny_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    folder = tmp_path / "studies" / "tiny_optuna"
    jobs = {int(p.name.split("_", 1)[0].removeprefix("trial")): p for p in folder.glob("trial*_tiny_*")}
    assert sorted(jobs) == [0, 1]
    for trial in study.trials:
        assert read_summary(jobs[trial.number])["val_acc_best"] == pytest.approx(trial.value)
    assert len(list(csv.DictReader((folder / "leaderboard.csv").open()))) == 2
    assert json.loads((folder / "best.json").read_text())["overall"]["val_acc"] == pytest.approx(study.best_value)
    # each job ran in a process of submitit's, which logged it
    logs = sorted((folder / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and all("epoch 1/1" in log.read_text() for log in logs), logs
