"""benchmarks/accuracy.py judges the records' goals on what the test set counted, not on float32 noise."""

import sys

import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402  (benchmarks/ is scripts, not a package)


def float32_accuracy(correct: int) -> float:
    """What torchmetrics hands back for `correct` of the 10,000 test images."""
    return torch.tensor(correct / 10_000, dtype=torch.float32).item()


def runs(*correct: int) -> list[dict]:
    return [{"test_acc": float32_accuracy(c), "val_acc_best": 0.996, "epochs": 20, "seed": s, "wall_time_s": 1.0}
            for s, c in enumerate(correct, start=1)]


def test_a_mean_of_exactly_the_goal_meets_it():
    three = runs(9959, 9963, 9958)  # 29,880 of 30,000 = 99.60%, 0.99599999 in float32
    assert sum(r["test_acc"] for r in three) / 3 < 0.996
    row = accuracy.aggregate("alexnet_lite", three, {"params": 1, "macs": 1})
    assert row["goal"] == 0.996 and row["goal_met"] is True


def test_one_image_short_of_the_goal_misses_it():
    row = accuracy.aggregate("alexnet_lite", runs(9959, 9963, 9957), {"params": 1, "macs": 1})
    assert row["goal_met"] is False
    assert accuracy.reaches(float32_accuracy(9970), accuracy.ENSEMBLE_GOAL)
    assert not accuracy.reaches(float32_accuracy(9969), accuracy.ENSEMBLE_GOAL)
