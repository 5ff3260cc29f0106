"""Resuming after a crash, clear errors for bad input, safe loading."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, read_summary, run_train, train_env

import cnn_lightning
from cnn_lightning.checkpoints import CheckpointError
from cnn_lightning.mnist_files import RAW_SHA256, raw_dir, sha256

RESUMABLE = [  # 2 epochs of 150 batches: long enough to kill one in the middle of an epoch
    "seed=5",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=150",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
    "~callbacks.progress_bar",
]


def test_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, mnist_dir):
    straight = tmp_path / "straight"
    done = run_train(*RESUMABLE, f"hydra.run.dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnn_lightning.train", *RESUMABLE, f"hydra.run.dir={crashed}"],
        cwd=ROOT, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    last = crashed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 900
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    assert last.exists(), "no checkpoint after 900 s: the machine is too busy for this test"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert not (crashed / "summary.json").exists()

    resumed = run_train(f"resume={crashed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = read_summary(straight), read_summary(crashed)
    print(f"\nuninterrupted: val {a['val_acc_best']:.4%} test {a['test_acc']:.4%}; "
          f"killed at epoch 1 and resumed: val {b['val_acc_best']:.4%} test {b['test_acc']:.4%}")
    assert b["epochs"] == a["epochs"] == 2
    assert b["val_acc_best"] == a["val_acc_best"]
    assert b["test_acc"] == a["test_acc"]
    # the same TensorBoard directory goes on (one more event file, same place)
    assert len(list((crashed / "tensorboard").glob("events.out.tfevents.*"))) >= 2


def test_resume_of_a_directory_that_is_not_a_run_says_so(tmp_path):
    result = run_train(f"resume={tmp_path}")
    assert result.returncode != 0
    assert "not a resumable run directory" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.lr=-0.1", "lr must be positive"),
        ("data.batch_size=0", "batch sizes must be positive"),
        ("data.val_size=60000", "val_size must be between"),
        ("trainer.max_epochs=abc", "max_epochs"),
    ],
)
def test_nonsensical_values_fail_before_training(tmp_path, override, message):
    result = run_train(override, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, mnist_dir):
    # An absurd learning rate makes the loss blow up within the second epoch.
    result = run_train(
        *FAST, "trainer.max_epochs=3", "model.scheduler=null", "model.optimizer.lr=1e6",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode != 0
    assert re.search(r"training loss is (nan|inf) at step \d+", result.stderr)
    last = tmp_path / "checkpoints" / "last.ckpt"
    if last.exists():  # the checkpoint written before the blow-up is intact and has finite weights
        state = torch.load(last, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_two_preparations_at_once_on_a_fresh_data_dir(tmp_path):
    code = "import sys; from cnn_lightning.mnist_files import prepare_mnist; prepare_mnist(sys.argv[1], download=False)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    for name, expected in RAW_SHA256.items():
        assert sha256(raw_dir(tmp_path) / name) == expected


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_truncated_foreign_and_code_carrying_checkpoints_are_refused(tmp_path, trained_run):
    good = Path(read_summary(trained_run)["best_checkpoint"]).read_bytes()
    truncated = _write(tmp_path / "truncated.ckpt", good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        cnn_lightning.load_model(truncated)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 1}}, foreign)
    with pytest.raises(CheckpointError, match="not a cnn-lightning checkpoint"):
        cnn_lightning.load_model(foreign)

    class Payload:  # unpickling this would call os.system; weights_only refuses to
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": {}}, "x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        cnn_lightning.load_model(evil)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_naming_a_class_outside_the_nets_is_refused(tmp_path, trained_run):
    ckpt = torch.load(read_summary(trained_run)["best_checkpoint"], weights_only=True)
    ckpt["hyper_parameters"]["net"] = {"_target_": "os.system", "command": "true"}
    hostile = tmp_path / "hostile.ckpt"
    torch.save(ckpt, hostile)
    with pytest.raises(CheckpointError, match="not one of cnn_lightning.nets"):
        cnn_lightning.load_model(hostile)


def test_weights_of_another_shape_are_a_clear_error(tmp_path, trained_run):
    ckpt = torch.load(read_summary(trained_run)["best_checkpoint"], weights_only=True)
    ckpt["hyper_parameters"]["net"]["c1"] = 4  # the weights no longer fit the net it names
    mismatched = tmp_path / "mismatched.ckpt"
    torch.save(ckpt, mismatched)
    with pytest.raises(CheckpointError, match="do not fit"):
        cnn_lightning.load_model(mismatched)


UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "plain pickle.load"),
    (re.compile(r"torch\.load\(.*weights_only\s*=\s*False"), "torch.load with weights_only=False"),
    (re.compile(r"(?<![\w.])eval\("), "eval of input"),
]


def test_no_unsafe_loading_anywhere_in_the_code():
    offenders = []
    for folder in ("cnn_lightning", "gui", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                offenders += [f"{path}:{lineno}: {what}" for pattern, what in UNSAFE if pattern.search(line)]
    assert not offenders, "\n".join(offenders)


def test_summary_json_is_never_half_written(trained_run):
    # written via a temporary file and os.replace: no temporary file is left behind
    assert json.loads((trained_run / "summary.json").read_text())["model"] == "tiny"
    assert not list(trained_run.glob("*.tmp"))
