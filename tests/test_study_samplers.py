"""The study sweeper's samplers beyond TPE, for real: the grid sampler asks every point of a
choice-only space once and the search stops there, whatever n_trials says; an interval in its
space is refused in one line before anything is written."""

from __future__ import annotations

import subprocess
import sys

import optuna
from conftest import ROOT, train_env

GRID = ["hydra.sweeper.sampler._target_=optuna.samplers.GridSampler", "+hydra.sweeper.sampler._partial_=true",
        "~hydra.sweeper.sampler.n_startup_trials", "hydra.sweeper.n_trials=5"]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false",
         "~callbacks.progress_bar"]
WIDTHS = ["model.net.c1=choice(8)", "model.net.c2=choice(14)", "model.net.squeeze=choice(8)",
          "model.net.c3=choice(12)", "model.net.c4=choice(12)", "model.net.c5=choice(12, 14)"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn_lightning.train", *args], cwd=ROOT, env=train_env(),
                          capture_output=True, text=True, timeout=600)


def test_the_grid_sampler_asks_each_point_once(tmp_path, mnist_dir):
    done = run("hparams_search=tiny_widths", *GRID, *WIDTHS, *SHORT, f"paths.log_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="tiny_widths", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(t.params["model.net.c5"] for t in study.trials) == [12, 14]  # 2 points, not 5 trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_grid_sampler_refuses_an_interval(tmp_path):
    done = run("hparams_search=tiny_optuna", *GRID, *SHORT, f"paths.log_dir={tmp_path}")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and lines == [
        "hydra.sweeper.params.model.scheduler.max_lr: the grid sampler takes choice(...) or range(...) only"], lines
    assert list(tmp_path.iterdir()) == []
