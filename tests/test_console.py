"""What a run prints where no progress bar can draw: one line per epoch, and none of the
libraries' noise. Real training runs with standard output piped, as `make train > log` does."""

from __future__ import annotations

import re

from conftest import FAST, run_train

EPOCH_LINE = re.compile(
    r"\]\[cnn_lightning\.train\]\[INFO\] - epoch (\d+)/(\d+)  train loss (\d+\.\d{4})  "
    r"val acc (\d+\.\d\d)% \(best (\d+\.\d\d)%\)  (\d+\.\d) s  ([\d,]+) img/s(?:  ~(\d+ min \d\d s|\d+ s) left)?$"
)


def test_a_piped_run_prints_one_line_per_epoch_and_no_bar(tmp_path):
    overrides = [o for o in FAST if o not in ("trainer.max_epochs=1", "~callbacks.progress_bar")]
    result = run_train(*overrides, "trainer.max_epochs=3", "trainer.limit_train_batches=8", "test=false",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "- epoch " in line]
    matches = [EPOCH_LINE.search(line) for line in lines]
    assert len(lines) == 3 and all(matches), lines
    epochs = [(int(m[1]), int(m[2])) for m in matches]
    assert epochs == [(1, 3), (2, 3), (3, 3)]
    accuracies, bests = [float(m[4]) for m in matches], [float(m[5]) for m in matches]
    assert bests == [max(accuracies[: i + 1]) for i in range(3)]  # the best so far, this epoch included
    assert all(m[8] for m in matches[:2]) and matches[2][8] is None  # time left, until the last epoch
    losses = [float(m[3]) for m in matches]
    assert all(0 < loss < 5 for loss in losses)
    assert "━" not in result.stdout + result.stderr, "the progress bar drew into a pipe"
    assert "Loading `train_dataloader`" not in result.stdout + result.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert sum("- epoch " in line for line in log.splitlines()) == 3  # the run's log file has them too


def test_the_line_can_be_switched_off(tmp_path):
    result = run_train(*FAST, "trainer.limit_train_batches=4", "test=false", "callbacks.epoch_line.when=never",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "- epoch 1/1" not in result.stdout
