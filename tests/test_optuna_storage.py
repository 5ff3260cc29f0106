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
from conftest import ROOT, compose_train, read_summary, train_env
from omegaconf import OmegaConf

SHORT = [  # each trial a real but very short training
    "trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "test=false",
    "~callbacks.progress_bar",
]


def start_search(root: Path) -> subprocess.Popen:
    """The search, one trial, with everything under ``root``: the study in root/optuna.db, runs in root/studies/."""
    return subprocess.Popen(
        [sys.executable, "-m", "cnn_lightning.train", "hparams_search=tiny_optuna", "hydra.sweeper.n_trials=1", *SHORT,
         f"paths.log_dir={root}"],
        cwd=ROOT, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-2000:] + err[-3000:]


def load(root: Path, study: str = "tiny_optuna") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{root}/optuna.db")


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


# Width choices all under tiny's budget: every trial trains.
NARROW = ["model.net.c1=choice(8)", "model.net.c2=choice(14)", "model.net.squeeze=choice(8)",
          "model.net.c3=choice(12)", "model.net.c4=choice(12)", "model.net.c5=choice(12, 14)"]


def run_width_search(root: Path, *widths: str) -> subprocess.CompletedProcess:
    """``hparams_search=tiny_widths``, two trials, with the widths' choices narrowed by ``widths``."""
    return subprocess.run(
        [sys.executable, "-m", "cnn_lightning.train", "hparams_search=tiny_widths", "hydra.sweeper.n_trials=2", *SHORT,
         *widths, f"paths.log_dir={root}"],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600,
    )


def test_width_search_fails_trials_over_the_budget_and_goes_on(tmp_path, mnist_dir):
    # every choice over tiny's 7,999: both trials fail before training, and the search says so in a line
    done = run_width_search(tmp_path / "over", "model.net.c2=choice(64)")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert ("Study tiny_widths: no trial finished; the first failed with ConfigError: tiny: 11,260 trainable "
            "parameters, over its budget max_params=7,999") in done.stderr, done.stderr[-3000:]
    study = load(tmp_path / "over", "tiny_widths")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    rows = list(csv.DictReader((tmp_path / "over" / "studies" / "tiny_widths" / "leaderboard.csv").open()))
    assert len(rows) == 2 and all("over its budget max_params=7,999" in r["status"] for r in rows), rows
    assert not list((tmp_path / "over").rglob("*.ckpt"))

    # widths under it train, with the recipe held at tiny's own
    done = run_width_search(tmp_path / "under", *NARROW)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path / "under", "tiny_widths")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        job = next((tmp_path / "under" / "studies" / "tiny_widths").glob(f"trial{trial.number}_tiny_*"))
        config = (job / ".hydra" / "config.yaml").read_text()
        assert f"c5: {trial.params['model.net.c5']}" in config and "max_lr: 0.2" in config
        assert read_summary(job)["params"] < 8000


def test_width_search_holds_the_recipe_at_tinys_own():
    # its fixed values must follow conf/model/tiny.yaml, or the search would compare widths on another recipe
    search, tiny = compose_train("hparams_search=tiny_widths"), compose_train("model=tiny")
    fixed = {k: v for k, v in search.hydra.sweeper.params.items() if not str(v).startswith("choice(")}
    assert set(fixed) == {"model.scheduler.max_lr", "model.optimizer.weight_decay", "model.net.dropout", "data.batch_size"}
    for key, value in fixed.items():
        assert float(value) == OmegaConf.select(tiny, key), key
    searched = [k for k in search.hydra.sweeper.params if k not in fixed]
    assert searched == [f"model.net.{w}" for w in ("c1", "c2", "squeeze", "c3", "c4", "c5")]


def test_a_search_with_seeds_scores_each_trial_by_the_mean_of_its_seeds(tmp_path, mnist_dir):
    done = run_width_search(tmp_path, *NARROW, "hydra.sweeper.seeds=[1,2]")
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path, "tiny_widths")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    folder = tmp_path / "studies" / "tiny_widths"
    for trial in study.trials:
        jobs = {seed: next(folder.glob(f"trial{trial.number}_tiny_seed{seed}_*")) for seed in (1, 2)}
        summaries = {seed: read_summary(job) for seed, job in jobs.items()}
        assert [s["seed"] for s in summaries.values()] == [1, 2]
        assert len({(job / ".hydra" / "config.yaml").read_text().replace("seed: 2", "seed: 1") for job in jobs.values()}) == 1
        by_seed = {str(seed): s["val_acc_best"] for seed, s in summaries.items()}
        assert trial.user_attrs["value_by_seed"] == pytest.approx(by_seed)
        assert trial.value == pytest.approx((by_seed["1"] + by_seed["2"]) / 2)
    assert len(list(csv.DictReader((folder / "leaderboard.csv").open()))) == 4  # a row per run

    # every seed of every trial over the budget: the trials fail, and the search says why in a line
    over = run_width_search(tmp_path / "over", "model.net.c2=choice(64)", "hydra.sweeper.seeds=[1,2]")
    assert over.returncode != 0 and "Traceback" not in over.stderr, over.stderr[-3000:]
    assert "no trial finished; the first failed with ConfigError: tiny: 11,260" in over.stderr, over.stderr[-3000:]
    assert [t.state for t in load(tmp_path / "over", "tiny_widths").trials] == [optuna.trial.TrialState.FAIL] * 2


@pytest.mark.parametrize("bad, message", [
    (["seed=3"], "hydra.sweeper.seeds=[1, 2] gives each trial its seeds; drop the seed override"),
    (["hydra.sweeper.seeds=[1,1]"], "hydra.sweeper.seeds repeats a seed: [1, 1]"),
])
def test_seeds_that_conflict_are_refused_before_any_trial(tmp_path, bad, message):
    done = run_width_search(tmp_path, "hydra.sweeper.seeds=[1,2]", *bad)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # refused before the study (optuna.db) or a sweep folder was made
