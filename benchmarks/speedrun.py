"""Wall time from the shell command to a tested checkpoint: ``experiment=speedrun``, N rounds.

    python benchmarks/speedrun.py                       # 5 rounds, seeds 42 (the default), 1, 2, 3, 4
    python benchmarks/speedrun.py --rounds 3 --extra trainer=gpu

Each round runs ``python -m cnn_lightning.train experiment=speedrun seed=S`` as a user would, in a
fresh process (start-up, data loading, training, the test of the val-chosen checkpoint and the
summary all inside the timed span), and reads the test accuracy back from its ``summary.json``.
Its console output is checked for what a quiet run must not print (a "Tip:" or a "deprecated"
line). The wall time is reported as the median of the rounds with the spread; the accuracy per
seed. Goal: <= 60 s and >= 99.4% on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, spread, start, timed_rounds, write_result

GOAL_S, GOAL_ACC = 60.0, 0.994
SEEDS = [42, 1, 2, 3, 4, 5, 6, 7, 8, 9]


def one_round(seed: int, extra: list[str], run_dir: Path) -> dict:
    command = [sys.executable, "-m", "cnn_lightning.train", "experiment=speedrun", f"seed={seed}",
               f"hydra.run.dir={run_dir}", *extra]
    began = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"seed {seed} failed (exit {result.returncode}):\n{output[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    noisy = [line for line in output.splitlines() if "Tip:" in line or "deprecated" in line]
    return {"seed": seed, "wall_s": round(wall, 2), "test_acc": summary["test_acc"],
            "val_acc_best": summary["val_acc_best"], "epochs": summary["epochs"], "noisy_lines": noisy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, choices=range(1, len(SEEDS) + 1), metavar="N")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides, e.g. trainer=gpu")
    args = parser.parse_args()
    info = start(argparse.Namespace(threads=None))  # each round's process uses torch's default threads
    rounds = timed_rounds(
        SEEDS[: args.rounds], lambda seed, run_dir: one_round(seed, args.extra, run_dir),
        lambda r: f"  seed {r['seed']:2d}: {r['wall_s']:6.1f} s wall, test {r['test_acc']:.2%} "
                  f"(val {r['val_acc_best']:.2%}), {len(r['noisy_lines'])} noisy lines",
    )
    walls = [r["wall_s"] for r in rounds]
    accs = [r["test_acc"] for r in rounds]
    wall = spread(walls)
    median = wall["median"]
    print(f"speedrun: median {median:.1f} s wall (spread {wall['min']:.1f}-{wall['max']:.1f} s, {len(walls)} rounds); "
          f"test accuracy {statistics.mean(accs):.2%} mean, {min(accs):.2%}-{max(accs):.2%} over seeds "
          f"{[r['seed'] for r in rounds]}; goal <= {GOAL_S:.0f} s and >= {GOAL_ACC:.1%}: "
          f"{'met' if median <= GOAL_S and min(accs) >= GOAL_ACC else 'NOT met'}")
    path = write_result("speedrun", {
        "settings": {"rounds": args.rounds, "extra_overrides": args.extra},
        "wall_s": wall,
        "test_acc": {"mean": statistics.mean(accs), "min": min(accs), "max": max(accs)},
        "rounds": rounds,
        "goal": {"wall_s": GOAL_S, "test_acc": GOAL_ACC},
    }, info)
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
