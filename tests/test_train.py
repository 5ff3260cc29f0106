"""The real training entry point, run as a user runs it."""

import pytest
import torch
from conftest import FAST, read_summary, run_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cnn_lightning
from cnn_lightning.checkpoints import CheckpointError


def test_short_run_writes_summary_checkpoint_and_tensorboard(trained_run):
    summary = read_summary(trained_run)
    assert summary["model"] == "tiny"
    assert summary["params"] < 8000
    assert 0.5 < summary["val_acc_best"] <= 1  # 60 real batches already beat chance by far
    assert 0.5 < summary["test_acc"] <= 1
    assert summary["epochs"] == 1 and summary["seed"] == 42
    checkpoints = trained_run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert summary["best_checkpoint"].startswith(str(checkpoints))


def test_checkpoint_loads_with_weights_only_and_predicts(trained_run, mnist_dir):
    best = read_summary(trained_run)["best_checkpoint"]
    raw = torch.load(best, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["name"] == "tiny"
    model = cnn_lightning.load_model(best)
    assert not model.training
    from cnn_lightning.data import MNISTDataModule

    dm = MNISTDataModule(str(mnist_dir))
    dm.setup()
    images, labels = dm.splits["test"]
    with torch.no_grad():
        logits = model(images[:2000].float() / 255)
    assert logits.shape == (2000, 10)
    assert (logits.argmax(1) == labels[:2000]).float().mean() > 0.5


def test_tensorboard_events_are_readable(trained_run):
    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "train/acc", "val/acc", "val/acc_best", "test/acc"} <= scalars
    val_acc = events.Scalars("val/acc")
    assert len(val_acc) == 1 and 0.5 < val_acc[0].value <= 1


def test_runs_from_another_working_directory(tmp_path, mnist_dir):
    run_dir = tmp_path / "elsewhere"
    result = run_train(*FAST, "test=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_summary(run_dir)["test_acc"] is None
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("no_logger", ["logger=null", "~logger"])
def test_a_run_without_a_logger_trains_and_writes_no_tensorboard(no_logger, tmp_path):
    # logger=null used to end in Hydra's traceback, ~logger in Lightning's refusal of the
    # learning-rate monitor; both now mean "no logger".
    run_dir = tmp_path / "quiet"
    result = run_train(*FAST, "test=false", no_logger, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "tensorboard").exists() and read_summary(run_dir)["tensorboard_dir"] is None


def test_unknown_model_fails_with_the_available_options(tmp_path):
    result = run_train("model=resnet999", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'model/resnet999'" in result.stderr
    assert "tiny" in result.stderr  # lists what exists


def test_badly_typed_override_fails_naming_the_key(tmp_path):
    result = run_train("trainer.max_epochs=abc", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "max_epochs" in result.stderr and "abc" in result.stderr


def test_load_model_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    try:
        cnn_lightning.load_model(bogus)
    except CheckpointError as err:
        assert "notes.ckpt" in str(err)
    else:
        raise AssertionError("load_model accepted a text file")


def test_speedrun_config_trains_and_the_console_stays_quiet(tmp_path, mnist_dir):
    """The speedrun's own config (the one a GPU run uses too), briefly, with its progress bar."""
    run_dir = tmp_path / "speedrun"
    result = run_train(
        "experiment=speedrun", "trainer.max_epochs=2", "trainer.limit_train_batches=8",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", f"hydra.run.dir={run_dir}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    summary = read_summary(run_dir)
    assert summary["model"] == "lenet" and summary["epochs"] == 2
    net = cnn_lightning.load_model(summary["best_checkpoint"]).net
    assert net.features.bn1.num_features == 16 and net.features.conv2.out_channels == 32
    assert "Tip:" not in output and "deprecated" not in output
    assert output.count("`Trainer.fit` stopped") == 1
    assert "Trainable params" not in output  # no second (Lightning's) model summary
    assert "| **total**" in output  # the project's per-layer table
