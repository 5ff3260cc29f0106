"""Accuracy benchmark: every net with its default recipe, several seeds, one table.

    python benchmarks/accuracy.py                               # 3 seeds x 4 nets, full recipes
    python benchmarks/accuracy.py --seeds 1 --models tiny lenet trainer.max_epochs=1 \\
        trainer.limit_train_batches=20 --out-dir /tmp/bench        # a smoke test

Each run is the real entry point, ``python -m cnn_lightning.train model=X seed=S``, in a
subprocess; its ``summary.json`` (best validation accuracy, test accuracy of the checkpoint chosen
on validation) and TensorBoard events (epoch times) are read back. Writes ``accuracy.json`` (every
run, the aggregates, the machine, the command) and ``accuracy.md`` (the table) to ``--out-dir``.
Extra arguments are Hydra overrides passed to every run; the table says when there were any.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import ROOT, describe, load_average, machine  # benchmarks/common.py; puts ROOT on sys.path

MODELS = ["lenet", "lenet_classic", "alexnet_lite", "tiny"]
# The goals: mean test accuracy of 3 seeds, checkpoint chosen on validation.
GOALS = {"tiny": 0.9950, "lenet": 0.9930, "lenet_classic": 0.9900, "alexnet_lite": 0.9960}


def net_size(model: str, overrides: list[str]) -> dict:
    """Parameters and MACs per image of the net that ``model`` + ``overrides`` configure."""
    from cnn_lightning.summary import compose_net, layer_table, totals

    net_overrides = [o for o in overrides if o.lstrip("+~").startswith("model.")]
    _, net = compose_net([f"model={model}", *net_overrides])
    total = totals(layer_table(net))
    return {"params": total["params"], "macs": total["macs"]}


def epoch_seconds(summary: dict) -> float | None:
    """Median time between the ends of consecutive validation epochs (train + val, no start-up);
    with a single epoch, the run's whole wall time divided by its epochs."""
    times = []
    tb_dir = summary.get("tensorboard_dir")
    if tb_dir and Path(tb_dir).is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
        events.Reload()
        if "val/acc" in events.Tags().get("scalars", []):
            times = [e.wall_time for e in events.Scalars("val/acc")]
    if len(times) >= 2:
        return statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    if summary.get("wall_time_s") and summary.get("epochs"):
        return summary["wall_time_s"] / summary["epochs"]
    return None


def train_once(model: str, seed: int, run_dir: Path, overrides: list[str], reuse: bool) -> dict:
    """One real training run; returns its summary.json plus the run's epoch time."""
    summary_path = run_dir / "summary.json"
    if not (reuse and summary_path.is_file()):
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "cnn_lightning.train", f"model={model}", f"seed={seed}",
            f"hydra.run.dir={run_dir}", "~callbacks.progress_bar", *overrides,
        ]
        print(f"[{datetime.now():%H:%M:%S}] {shlex.join(command[1:])}", flush=True)
        started = time.perf_counter()
        with open(run_dir / "train.log", "w") as log:
            result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0 or not summary_path.is_file():
            tail = (run_dir / "train.log").read_text()[-2000:]
            raise RuntimeError(f"{model} seed {seed} failed (exit {result.returncode}):\n{tail}")
        print(f"    done in {time.perf_counter() - started:.0f} s", flush=True)
    summary = json.loads(summary_path.read_text())
    summary["epoch_time_s"] = epoch_seconds(summary)
    return summary


def aggregate(model: str, runs: list[dict], size: dict) -> dict:
    tests = [r["test_acc"] for r in runs if r.get("test_acc") is not None]
    vals = [r["val_acc_best"] for r in runs if r.get("val_acc_best") is not None]
    epoch_times = [r["epoch_time_s"] for r in runs if r.get("epoch_time_s")]
    mean_test = statistics.fmean(tests) if tests else None
    goal = GOALS.get(model)
    return {
        "model": model,
        "params": size["params"],
        "macs": size["macs"],
        "epochs": max((r["epochs"] for r in runs), default=0),
        "seeds": [r["seed"] for r in runs],
        "test_acc_mean": mean_test,
        "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else None,  # no spread from one seed
        "val_acc_best_mean": statistics.fmean(vals) if vals else None,
        "val_acc_best_max": max(vals) if vals else None,
        "epoch_time_s": statistics.fmean(epoch_times) if epoch_times else None,
        "goal": goal,
        "goal_met": None if goal is None or mean_test is None else mean_test >= goal,
        "runs": runs,
    }


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def markdown(results: dict) -> str:
    lines = [
        "# Accuracy on the official MNIST test set",
        "",
        "Each net with its default recipe (`conf/model/<net>.yaml`); the checkpoint is the epoch with",
        "the best validation accuracy (5,000 held-out training images), tested once on the 10,000",
        "test images. Mean ± standard deviation over seeds.",
        "",
        "| net | params | MACs | epochs | test acc (mean ± std) | best val acc (mean) | goal | s / epoch | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["models"]:
        std = "" if r["test_acc_std"] is None else f" ± {100 * r['test_acc_std']:.2f}"
        goal = "" if r["goal"] is None else f"{pct(r['goal'])} {'met' if r['goal_met'] else 'missed'}"
        epoch_time = "n/a" if r["epoch_time_s"] is None else f"{r['epoch_time_s']:.1f}"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['macs']:,} | {r['epochs']} | {pct(r['test_acc_mean'])}{std} "
            f"| {pct(r['val_acc_best_mean'])} | {goal} | {epoch_time} | {len(r['seeds'])} |"
        )
    lines += [
        "",
        f"Machine: {describe(results['machine'])} at the start, {results['load_average_after']} "
        f"(1, 5, 15 min) at the end. {results['date']}.",
        "",
        f"Command: `{results['command']}`",
    ]
    if results["overrides"]:
        lines += ["", f"**Not the default recipes**: every run had `{' '.join(results['overrides'])}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per net (default 3)")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds are first-seed, first-seed+1, ...")
    parser.add_argument("--models", nargs="+", default=MODELS, help=f"nets (default {' '.join(MODELS)})")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results",
                        help="where accuracy.json and accuracy.md go")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the runs go (default outputs/benchmarks/<date_time>)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs of --runs-dir that already have a summary.json (resume a benchmark)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished runs of --runs-dir (the table says how many seeds each has)")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o]
    if bad:
        parser.error(f"not an option nor a Hydra override: {' '.join(bad)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    runs_dir = args.runs_dir or ROOT / "outputs" / "benchmarks" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    command = shlex.join(["python", "benchmarks/accuracy.py", *(argv if argv is not None else sys.argv[1:])])
    results = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "overrides": overrides,
        "runs_dir": str(runs_dir),
        "models": [],
    }
    failures = []
    for model in args.models:
        runs = []
        for seed in seeds:
            if args.report_only and not (runs_dir / model / f"seed{seed}" / "summary.json").is_file():
                continue
            try:
                runs.append(train_once(model, seed, runs_dir / model / f"seed{seed}", overrides, args.reuse or args.report_only))
            except RuntimeError as err:
                failures.append(str(err))
                print(err, file=sys.stderr)
        if runs:
            results["models"].append(aggregate(model, runs, net_size(model, overrides)))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    results["load_average_after"] = load_average()
    (args.out_dir / "accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "accuracy.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.out_dir / 'accuracy.json'} and {args.out_dir / 'accuracy.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
