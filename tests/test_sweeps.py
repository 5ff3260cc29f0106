"""Multiruns, the leaderboard, the checkpoint locator, evaluation and ensembles, for real."""

import contextlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, compose_train, read_summary, train_env

from cnn_lightning.checkpoints import find_best, find_runs

SHORT = [  # every job: 60 real batches, the full validation and test sets (a few seconds)
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=60",
    "~callbacks.progress_bar",
]


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=train_env(),
    )


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, mnist_dir) -> Path:
    sweep = tmp_path_factory.mktemp("sweep")
    result = run_module("cnn_lightning.train", "-m", "seed=1,2", *SHORT, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def test_multirun_writes_a_leaderboard_and_best_json(sweep_dir):
    summaries = [read_summary(p.parent) for p in sweep_dir.glob("*/summary.json")]
    assert len(summaries) == 2
    best = json.loads((sweep_dir / "best.json").read_text())
    top = max(summaries, key=lambda s: s["val_acc_best"])
    assert best["overall"]["checkpoint"] == top["best_checkpoint"]
    assert Path(best["overall"]["checkpoint"]).is_file()
    assert best["by_model"]["tiny"]["val_acc"] == pytest.approx(top["val_acc_best"])
    rows = (sweep_dir / "leaderboard.csv").read_text().splitlines()
    assert rows[0].startswith("rank,model,overrides") and len(rows) == 3
    assert "seed=1" in (sweep_dir / "leaderboard.md").read_text()


def test_evaluate_reproduces_the_runs_test_accuracy(sweep_dir, tmp_path):
    run = find_best(sweep_dir)
    out = tmp_path / "eval"
    result = run_module("cnn_lightning.evaluate", f"ckpt={run.checkpoint}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_acc"] == pytest.approx(run.test_acc, abs=1e-6)
    assert sum(map(sum, metrics["confusion_matrix"])) == 10_000
    assert len(metrics["per_class_acc"]) == 10
    for png in ("confusion_matrix.png", "worst_misclassified.png"):
        assert (out / png).stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_ensemble_averages_every_run_found(sweep_dir, tmp_path):
    out = tmp_path / "ensemble"
    result = run_module(
        "cnn_lightning.evaluate", "ensemble=true", f"outputs_root={sweep_dir}", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ensemble"] and len(metrics["members"]) == 2
    assert {m["seed"] for m in metrics["members"]} == {1, 2}
    assert 0.5 < metrics["test_acc"] <= 1


def test_ensemble_of_one_seed_and_chosen_nets(sweep_dir, tmp_path):
    out = tmp_path / "seed2"
    result = run_module("cnn_lightning.evaluate", "ensemble=true", "ensemble_seed=2", "ensemble_models=[tiny]",
                        f"outputs_root={sweep_dir}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    members = json.loads((out / "metrics.json").read_text())["members"]
    assert [(m["model"], m["seed"]) for m in members] == [("tiny", 2)]
    # a net with no run of that seed is named, not silently left out
    missing = run_module("cnn_lightning.evaluate", "ensemble=true", "ensemble_seed=2", "ensemble_models=[tiny,micro]",
                         f"outputs_root={sweep_dir}", f"hydra.run.dir={tmp_path / 'm'}")
    assert missing.returncode != 0 and "no finished runs of seed 2 of micro" in missing.stderr


def test_ensemble_rules_benchmark_scores_a_run_as_training_and_evaluate_did(sweep_dir, tmp_path):
    # benchmarks/ensemble_rules.py recomputes accuracies from the checkpoints; for one member, its
    # validation and test figures must be the ones Lightning logged for that checkpoint.
    run = next(r for r in find_runs(sweep_dir) if r.seed == 1)
    result = subprocess.run(
        [sys.executable, "benchmarks/ensemble_rules.py", f"--runs-dir={sweep_dir}", "--seed=1", "--models", "tiny",
         f"--results-dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=train_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "ensemble_rules.json").read_text())
    assert figures["members"] == {"tiny": str(run.checkpoint)}
    for rule in ("mean of softmax", "tiny alone"):
        assert figures["val_acc"][rule] == pytest.approx(run.val_acc, abs=1e-6)
        assert figures["test_acc"][rule] == pytest.approx(run.test_acc, abs=1e-6)
    assert 0.5 < figures["test_acc"]["mean of softmax, test-time shifts"] <= 1
    assert figures["best_subset_on_val"] is None  # subsets need three members
    missing = subprocess.run(
        [sys.executable, "benchmarks/ensemble_rules.py", f"--runs-dir={sweep_dir}", "--models", "tiny", "micro",
         f"--results-dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=train_env(),
    )
    assert missing.returncode == 2 and "no seed-1 run of micro" in missing.stderr


def test_evaluate_with_nothing_trained_says_what_to_run(tmp_path):
    result = run_module("cnn_lightning.evaluate", f"outputs_root={tmp_path}", "arch=lenet", f"hydra.run.dir={tmp_path / 'e'}")
    assert result.returncode != 0
    assert "python -m cnn_lightning.train model=lenet" in result.stderr


def test_locator_skips_corrupt_and_orphaned_runs(sweep_dir, tmp_path, caplog):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "summary.json").write_text("{not json")
    (tmp_path / "orphan").mkdir()
    orphan = read_summary(next(sweep_dir.glob("0_*")))
    orphan["best_checkpoint"] = str(tmp_path / "deleted.ckpt")
    (tmp_path / "orphan" / "summary.json").write_text(json.dumps(orphan))
    (tmp_path / "noise.ckpt").write_bytes(b"\x00" * 100)
    with caplog.at_level(logging.WARNING):
        assert find_runs(tmp_path) == []
    assert "garbage" in caplog.text and "deleted.ckpt" in caplog.text
    assert find_best(tmp_path, "tiny") is None


def test_optuna_sweep_with_two_trials_maximises_val_acc(tmp_path, mnist_dir):
    result = run_module(
        "cnn_lightning.train", "hparams_search=tiny_optuna", "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "~callbacks.progress_bar", f"hydra.sweep.dir={tmp_path}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",  # not the project's own study
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [read_summary(p.parent) for p in tmp_path.glob("*/summary.json")]
    assert len(trials) == 2
    optimum = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert optimum["best_value"] == pytest.approx(max(t["val_acc_best"] for t in trials))
    assert (tmp_path / "best.json").is_file()


def test_launcher_configs_compose():
    slurm = compose_train("hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2").hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.gpus_per_node == 4 and slurm.tasks_per_node == 4 and slurm.nodes == 2
    parallel = compose_train("hydra/launcher=parallel").hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 2


def test_compare_all_experiment_sweeps_every_net_and_three_seeds():
    cfg = compose_train("experiment=compare_all")
    params = cfg.hydra.sweeper.params
    assert set(params.model.split(",")) == {"lenet", "lenet_classic", "alexnet_lite", "tiny", "micro"}
    assert params.seed == "1,2,3"


def test_a_full_disk_costs_a_running_sweep_its_leaderboard_not_its_jobs(trained_run, tmp_path, caplog):
    """The Hydra callback writes the leaderboard after every job: a full disk there is one
    warning line and the sweep goes on, with no temporary file left behind."""
    import os
    import shutil

    from cnn_lightning.sweep import _leaderboard_or_warn

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        run = disk / "0_tiny"
        run.mkdir()
        summary = read_summary(trained_run)  # its checkpoint stays where it is, outside the full disk
        (run / "summary.json").write_text(json.dumps(summary))
        shutil.copytree(trained_run / ".hydra", run / ".hydra")
        with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:  # fill what is left
                filler.write(b"\0" * 4096)
        before = sorted(os.listdir(disk))
        with caplog.at_level(logging.WARNING, logger="cnn_lightning.sweep"):
            _leaderboard_or_warn(str(disk))  # must not raise
        warnings = [r for r in caplog.records if r.name == "cnn_lightning.sweep"]
        assert len(warnings) == 1 and "leaderboard not written" in warnings[0].getMessage()
        assert sorted(os.listdir(disk)) == before, "a temporary file was left behind"
    finally:
        subprocess.run(["umount", str(disk)], check=False)
