"""Resuming after a crash, clear errors for bad input, safe loading."""

import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, read_summary, run_train, train_env
from lightning.pytorch.callbacks import Callback

import cnn_lightning
from cnn_lightning.checkpoints import CheckpointError
from cnn_lightning.mnist_files import RAW_SHA256, raw_dir, sha256
from cnn_lightning.saving import STOP_SIGNALS, AtomicCheckpointIO, Interrupted, StopSignals
from cnn_lightning.sweep import write_leaderboard

RESUMABLE = [  # 2 epochs of 150 batches: long enough to kill one in the middle of an epoch
    "seed=5",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=150",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
    "~callbacks.progress_bar",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir) -> Path:
    """The run that the interrupted and resumed ones must equal."""
    straight = tmp_path_factory.mktemp("straight")
    done = run_train(*RESUMABLE, f"hydra.run.dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]
    return straight


def test_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, uninterrupted):
    straight = uninterrupted
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


def _start_and_wait_for_first_epoch(watched: Path, *overrides: str, multirun: bool = False, runs: int = 1,
                                    own_process_group: bool = False) -> subprocess.Popen:
    """Start a RESUMABLE training and return once ``runs`` ``last.ckpt`` files below ``watched`` (a
    run or sweep directory) show that that many runs are past their first epoch."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnn_lightning.train", *(["-m"] if multirun else []), *RESUMABLE, *overrides],
        cwd=ROOT, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=own_process_group,
    )
    deadline = time.monotonic() + 900
    while (len(list(watched.glob("**/checkpoints/last.ckpt"))) < runs and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    assert proc.poll() is None, "the run finished before it could be interrupted; make it longer"
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_mid_epoch_checkpoint_and_exits_non_zero(tmp_path, uninterrupted, signum):
    run_dir = tmp_path / "interrupted"
    proc = _start_and_wait_for_first_epoch(run_dir, f"hydra.run.dir={run_dir}")
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert f"training stopped by {signal.Signals(signum).name} at epoch 1" in stderr, stderr[-2000:]
    assert f"resume={run_dir}" in stderr and "Traceback" not in stderr
    assert ("Received SIGTERM" in stderr) == (signum == signal.SIGTERM), "Lightning's log misnames the signal"
    checkpoints = run_dir / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    done = last["MNISTDataModule"]["train_batches_done"]
    assert last["epoch"] == 1 and 0 < done < 150, "not a checkpoint of the interrupted epoch"
    assert last["global_step"] == 150 + done
    assert not list(checkpoints.glob(".*.tmp")), "a temporary checkpoint file was left behind"
    assert not (run_dir / "summary.json").exists()
    if signum == signal.SIGINT:  # SIGTERM takes the same path after the signal handler
        return
    resumed = run_train(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = read_summary(uninterrupted), read_summary(run_dir)
    assert (b["epochs"], b["global_steps"]) == (a["epochs"], a["global_steps"]) == (2, 300)
    assert b["val_acc_best"] == a["val_acc_best"]
    assert b["test_acc"] == a["test_acc"]


def test_ctrl_c_stops_a_whole_sweep_not_only_its_current_job(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    proc = _start_and_wait_for_first_epoch(sweep, "seed=5,6", f"hydra.sweep.dir={sweep}", multirun=True)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-3000:]
    assert "sweep stopped, later jobs not started: training stopped by SIGINT at epoch 1" in stderr, stderr[-3000:]
    jobs = [d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(jobs) == 1, "the second job started after Ctrl-C"
    failed = json.loads((jobs[0] / "failed.json").read_text())
    assert failed["seed"] == 5 and f"resume={jobs[0]}" in failed["error"]
    assert "failed: Interrupted" in (sweep / "leaderboard.md").read_text()


@pytest.fixture
def python_ctrl_c():
    """Python's own SIGINT handler for the test, whatever this process inherited: a background job
    of a non-interactive shell (`make test &`) starts with SIGINT ignored."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


def test_a_signal_outside_the_fit_stops_at_once_and_names_the_phase(python_ctrl_c):
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with StopSignals() as stop_signals:
        with pytest.raises(Interrupted, match="stopped by SIGINT while the run was starting"):
            signal.raise_signal(signal.SIGINT)
        with stop_signals.fitting():  # Lightning's and InterruptCheckpoint's turn: the process's own handlers
            assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        with pytest.raises(Interrupted, match="stopped by SIGTERM after training, while testing"):
            signal.raise_signal(signal.SIGTERM)
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


@pytest.mark.parametrize("to_group", [False, True], ids=["SIGTERM to the parent", "Ctrl-C to the process group"])
def test_a_stopped_parallel_sweep_saves_every_running_job_mid_epoch(tmp_path, mnist_dir, to_group):
    # `kill PID` or `docker stop` signal the parent alone, a terminal's Ctrl-C the whole group;
    # the jobs run in joblib's worker processes.
    sweep = tmp_path / "sweep"
    proc = _start_and_wait_for_first_epoch(sweep, "seed=5,6", f"hydra.sweep.dir={sweep}", "hydra/launcher=parallel",
                                           "hydra.launcher.n_jobs=2", multirun=True, runs=2, own_process_group=to_group)
    signum = signal.SIGINT if to_group else signal.SIGTERM
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-3000:]
    assert f"sweep stopped, later jobs not started: training stopped by {signum.name} at epoch 1" in stderr, stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(jobs) == 2
    for job in jobs:
        failed = json.loads((job / "failed.json").read_text())
        assert f"resume={job}" in failed["error"], failed
        last = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["epoch"] == 1 and 0 < last["MNISTDataModule"]["train_batches_done"] < 150, "not saved mid-epoch"


def test_resume_with_more_epochs_extends_the_one_cycle_schedule(tmp_path, trained_run):
    run_dir = tmp_path / "extended"
    shutil.copytree(trained_run, run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["lr_schedulers"][0]["total_steps"] == 60
    result = run_train(f"resume={run_dir}", "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    # A copied run dir is not the one its checkpoints name, so Lightning writes last-v1.ckpt.
    last = max(run_dir.glob("checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    schedule = torch.load(last, weights_only=True)["lr_schedulers"][0]
    assert schedule["total_steps"] == 120  # built for the new length
    assert schedule["last_epoch"] == 120 and read_summary(run_dir)["epochs"] == 2


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB file system (tmpfs), so that a write runs out of space for real."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_never_leaves_a_truncated_checkpoint(small_disk, trained_run):
    checkpoint = torch.load(read_summary(trained_run)["best_checkpoint"], weights_only=True)
    saver = AtomicCheckpointIO()
    folder = small_disk / "checkpoints"
    saver.save_checkpoint(checkpoint, folder / "epoch00.ckpt")  # ~90 KB: fits
    saver.save_checkpoint(checkpoint, folder / "last.ckpt")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    checkpoint["padding"] = torch.zeros(40_000)  # +160 KB: no longer fits
    for name in ("epoch01.ckpt", "last.ckpt"):  # a new file, and one replacing a good one
        with pytest.raises(OSError) as raised:
            saver.save_checkpoint(checkpoint, folder / name)
        assert raised.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing half-written, nothing lost
    cnn_lightning.load_model(folder / "last.ckpt")


class CheckpointIOProbe(Callback):
    """Test-only callback: writes the class of the trainer's checkpoint writer to ``out``."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_fit_start(self, trainer, pl_module):
        self.out.write_text(type(trainer.strategy.checkpoint_io).__name__)


def test_a_failed_job_and_a_nan_run_are_marked_on_the_leaderboard_not_dropped_or_ranked(tmp_path, mnist_dir):
    sweep, probe = tmp_path / "sweep", tmp_path / "checkpoint_io.txt"
    env = train_env() | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "cnn_lightning.train", "-m", "model.optimizer.lr=0.05,-1", *FAST,
         "+callbacks.io_probe._target_=test_reliability.CheckpointIOProbe", f"+callbacks.io_probe.out={probe}",
         f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert probe.read_text() == "AtomicCheckpointIO"  # the training wrote through the atomic writer
    assert result.returncode != 0  # the sweep reports its failed job ...
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))  # ... and still has a leaderboard
    assert [(r["rank"], r["status"][:26]) for r in rows] == [("1", "ok"), ("", "failed: ConfigError: model")]
    assert "model.optimizer.lr=-1: must be in (0, inf]" in rows[1]["status"]
    assert "model.optimizer.lr=-1" in rows[1]["overrides"]

    # A copy of the good run whose validation accuracy reads NaN: listed, never ranked or best.
    good = next(p.parent for p in sweep.glob("*/summary.json"))
    shutil.copytree(good, sweep / "9_tiny_nan")
    summary = json.loads((sweep / "9_tiny_nan" / "summary.json").read_text())
    (sweep / "9_tiny_nan" / "summary.json").write_text(json.dumps(summary | {"val_acc_best": float("nan")}))
    best = write_leaderboard(sweep)
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert [(r["rank"], r["status"][:6]) for r in rows] == [("1", "ok"), ("", "nan"), ("", "failed")]
    assert best["overall"]["checkpoint"] == str(summary["best_checkpoint"])
    assert "nan" in (sweep / "leaderboard.md").read_text()



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
