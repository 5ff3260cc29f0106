"""What pruning saves: ``hparams_search=tiny_optuna`` with and without a MedianPruner.

    python benchmarks/pruning.py                      # 6 trials x 3 epochs of 100 batches
    python benchmarks/pruning.py --trials 8 --epochs 4 --batches 200

Both searches run the same command in a fresh process, each on a new study (its own SQLite file)
with the same sampler seed and number of trials, so they are asked the same configurations (the
TPE sampler's first 8 trials are random); one of them adds
``hydra.sweeper.pruner=MedianPruner(n_startup_trials=2)``: from the third trial on, a trial whose
val/acc after an epoch is below the median of the earlier trials' at that epoch stops there.
Records each search's CPU time (the command and everything it ran), wall time, the best
validation accuracy it found and how many trials were pruned, in benchmarks/results/pruning.json.
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, start, write_result

PRUNER = ["+hydra.sweeper.pruner._target_=optuna.pruners.MedianPruner", "+hydra.sweeper.pruner.n_startup_trials=2"]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def search(root: Path, args, pruner: list[str]) -> dict:
    command = [sys.executable, "-m", "cnn_lightning.train", "hparams_search=tiny_optuna",
               f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.sampler.seed={args.sampler_seed}",
               f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.batches}", "test=false",
               "~callbacks.progress_bar", f"paths.log_dir={root}", *pruner]
    cpu, began = children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - began, children_cpu_s() - cpu
    if done.returncode != 0:
        sys.exit(f"pruning: the search failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = list(csv.DictReader((root / "studies" / "tiny_optuna" / "leaderboard.csv").open()))
    ranked = [float(r["val_acc"]) for r in rows if r["rank"]]
    return {
        "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
        "best_val_acc": max(ranked) if ranked else None,
        "trials": len(rows), "pruned": sum(r["status"].startswith("pruned") for r in rows),
        "epochs_trained": sum(int(r["epochs"]) for r in rows),
        "statuses": [r["status"] for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100, help="trainer.limit_train_batches")
    parser.add_argument("--sampler-seed", type=int, default=1234)
    args = parser.parse_args()
    info = start(argparse.Namespace(threads=None))
    figures = {"trials": args.trials, "epochs": args.epochs, "limit_train_batches": args.batches,
               "sampler_seed": args.sampler_seed, "pruner": "MedianPruner(n_startup_trials=2)"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, pruner in (("without_pruner", []), ("with_median_pruner", PRUNER)):
            figures[name] = search(Path(tmp) / name, args, pruner)
            print(name, figures[name])
    path = write_result("pruning", figures, info)
    print(f"pruning: {path}")


if __name__ == "__main__":
    main()
