"""Accuracy benchmark: every net with its default recipe, several seeds, one table.

    python benchmarks/accuracy.py                               # 3 seeds x 5 nets, full recipes, + the ensemble
    python benchmarks/accuracy.py --seeds 1 --models tiny lenet trainer.max_epochs=1 \\
        trainer.limit_train_batches=20 --out-dir /tmp/bench        # a smoke test

Each run is the real entry point, ``python -m cnn_lightning.train model=X seed=S``, in a
subprocess; its ``summary.json`` (best validation accuracy, test accuracy of the checkpoint chosen
on validation) and TensorBoard events (epoch times) are read back. Writes ``accuracy.json`` (every
run, the aggregates, the machine, the command) and ``accuracy.md`` (the table) to ``--out-dir``; with
the default ``--out-dir`` also the README's short records table (``records_table``).
Extra arguments are Hydra overrides passed to every run; the table says when there were any.
``--keep-others`` reruns only ``--models`` and carries the other nets' rows over from the existing
``accuracy.json``, each with the date it was measured. The ensemble is scored on the first seed's
runs in ``--runs-dir`` when all its members have one there and one of them was rerun; otherwise
the old ensemble is kept only if none of its members was rerun.
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

MODELS = ["lenet", "lenet_classic", "alexnet_lite", "tiny", "micro"]
# The goals (issue "Records"): mean test accuracy of 3 seeds, checkpoint chosen on validation.
GOALS = {"tiny": 0.9950, "micro": 0.9940, "lenet": 0.9940, "lenet_classic": 0.9900, "alexnet_lite": 0.9960}
# The published ensemble: the first seed's run of each of these nets, mean of their softmax.
ENSEMBLE = ["tiny", "micro", "lenet", "alexnet_lite"]
ENSEMBLE_GOAL = 0.9970


def reaches(accuracy: float, goal: float) -> bool:
    """``accuracy >= goal``, free of float32 noise: accuracies are float32 counts of 10,000 images,
    so a mean of 9,959, 9,963 and 9,958 correct comes out as 0.99599999 instead of 0.996. Means of
    up to ten seeds move in steps of 1e-5 or more, so six decimals keep them apart."""
    return round(accuracy, 6) >= goal


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
    summary |= recipe_extras(summary)
    return summary


def recipe_extras(summary: dict) -> dict:
    """Whether the run's checkpoint was trained with a teacher or holds EMA-averaged weights."""
    import torch

    checkpoint = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True, mmap=True)
    teacher = ((checkpoint.get("hyper_parameters") or {}).get("distill") or {}).get("teacher") or []
    return {"distilled_from": [teacher] if isinstance(teacher, str) else list(teacher),
            "ema": "averaging_state" in checkpoint}


def run_name(checkpoint: str) -> str:
    """``lenet/seed1`` for .../lenet/seed1/checkpoints/x.ckpt: which run a teacher was."""
    parts = Path(checkpoint).parts
    return "/".join(parts[-4:-2]) if len(parts) >= 4 else checkpoint


def ensemble(runs_dir: Path, seed: int, models: list[str]) -> dict | None:
    """The ensemble of the seed's run of each net, scored by ``python -m cnn_lightning.evaluate``."""
    out = runs_dir / f"ensemble_seed{seed}"
    command = [sys.executable, "-m", "cnn_lightning.evaluate", "ensemble=true", f"ensemble_seed={seed}",
               f"ensemble_models=[{','.join(models)}]", f"outputs_root={runs_dir}", f"hydra.run.dir={out}"]
    print(f"[{datetime.now():%H:%M:%S}] {shlex.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        return None
    metrics = json.loads((out / "metrics.json").read_text())
    return {"command": shlex.join(["python", *command[1:]]), "seed": seed, "models": models,
            "test_acc": metrics["test_acc"], "errors": metrics["errors"], "goal": ENSEMBLE_GOAL,
            "goal_met": reaches(metrics["test_acc"], ENSEMBLE_GOAL),
            "members": [{k: m.get(k) for k in ("model", "seed", "test_acc")} for m in metrics["members"]]}


def aggregate(model: str, runs: list[dict], size: dict) -> dict:
    tests = [r["test_acc"] for r in runs if r.get("test_acc") is not None]
    vals = [r["val_acc_best"] for r in runs if r.get("val_acc_best") is not None]
    epoch_times = [r["epoch_time_s"] for r in runs if r.get("epoch_time_s")]
    mean_test = statistics.fmean(tests) if tests else None
    goal = GOALS.get(model)
    return {
        "model": model,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "params": size["params"],
        "macs": size["macs"],
        "epochs": max((r["epochs"] for r in runs), default=0),
        "seeds": [r["seed"] for r in runs],
        "test_acc_mean": mean_test,
        "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else None,  # no spread from one seed
        "val_acc_best_mean": statistics.fmean(vals) if vals else None,
        "val_acc_best_max": max(vals) if vals else None,
        "epoch_time_s": statistics.fmean(epoch_times) if epoch_times else None,
        "wall_time_s_mean": statistics.fmean(r["wall_time_s"] for r in runs),
        "distilled": sorted({run_name(t) for r in runs for t in r.get("distilled_from", [])}),
        "ema": any(r.get("ema") for r in runs),
        "goal": goal,
        "goal_met": None if goal is None or mean_test is None else reaches(mean_test, goal),
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
        "| net | params | MACs | epochs | test acc (mean ± std) | first seed | best val acc (mean) | goal | s / epoch | s / run | EMA | teacher | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in results["models"]:
        std = "" if r["test_acc_std"] is None else f" ± {100 * r['test_acc_std']:.2f}"
        goal = "" if r["goal"] is None else f"{pct(r['goal'])} {'met' if r['goal_met'] else 'missed'}"
        epoch_time = "n/a" if r["epoch_time_s"] is None else f"{r['epoch_time_s']:.1f}"
        teacher = ", ".join(r.get("distilled", [])) or "none"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['macs']:,} | {r['epochs']} | {pct(r['test_acc_mean'])}{std} "
            f"| {pct(r['runs'][0]['test_acc'])} | {pct(r['val_acc_best_mean'])} | {goal} | {epoch_time} "
            f"| {r.get('wall_time_s_mean', 0):.0f} | {'yes' if r.get('ema') else 'no'} | {teacher} | {len(r['seeds'])} |"
        )
    kept = [r for r in results["models"] if r.get("kept_from")]
    if kept:
        lines += ["", "Rows carried over unchanged from an earlier run of this benchmark (their recipes did not "
                  "change): " + ", ".join(f"{r['model']} ({r['kept_from']})" for r in kept) + "."]
    if results.get("ensemble"):
        e = results["ensemble"]
        lines += [
            "",
            f"**Ensemble** of the seed-{e['seed']} runs of {', '.join(e['models'])} (mean of softmax): "
            f"**{pct(e['test_acc'])}** ({e['errors']} errors in 10,000), goal {pct(e['goal'])} "
            f"{'met' if e['goal_met'] else 'missed'}. Members: "
            + ", ".join(f"{m['model']} {pct(m['test_acc'])}" for m in e["members"]) + f". Command: `{e['command']}`",
        ]
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


# The README's short records table lives between these two lines; main() rewrites it.
README_BEGIN = "<!-- records: written by benchmarks/accuracy.py from benchmarks/results/accuracy.json -->"
README_END = "<!-- /records -->"


def records_table(results: dict) -> str:
    """The README's records table: per net its parameters, mean ± std test accuracy over its seeds,
    epochs and seconds per run; the ensemble as a last row."""
    lines = [
        "| net | parameters | test accuracy (mean ± std) | seeds | epochs | s / run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    params = {}
    for r in results["models"]:
        params[r["model"]] = r["params"]
        std = "" if r["test_acc_std"] is None else f" ± {100 * r['test_acc_std']:.2f}"
        lines.append(f"| `{r['model']}` | {r['params']:,} | {pct(r['test_acc_mean'])}{std} | {len(r['seeds'])} "
                     f"| {r['epochs']} | {r.get('wall_time_s_mean', 0):.0f} |")
    if results.get("ensemble"):
        e = results["ensemble"]
        total = sum(params.get(m, 0) for m in e["models"])
        lines.append(f"| ensemble of the seed-{e['seed']} runs above (mean of softmax) | {total:,} "
                     f"| {pct(e['test_acc'])} | 1 | | |")
    return "\n".join(lines) + "\n"


def write_readme_records(readme: Path, results: dict) -> None:
    """Replace the table between README_BEGIN and README_END in ``readme`` with records_table."""
    text = readme.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        print(f"{readme}: no records markers, table not written", file=sys.stderr)
        return
    head = text[: begin + len(README_BEGIN)]
    readme.write_text(f"{head}\n{records_table(results)}{text[end:]}")


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
    parser.add_argument("--keep-others", action="store_true",
                        help="carry the rows of nets not in --models over from --out-dir's accuracy.json")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished runs of --runs-dir (the table says how many seeds each has)")
    args, overrides = parser.parse_known_args(argv)
    # --models takes every word after it, overrides included: give those back to the overrides
    overrides += [m for m in args.models if "=" in m]
    args.models = [m for m in args.models if "=" not in m]
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

    # the first seed's run of every member, from this invocation or an earlier one into --runs-dir;
    # rescored only when this invocation trained one of them
    rerun = {m["model"] for m in results["models"]}
    have_first_seed = {m for m in ENSEMBLE if (runs_dir / m / f"seed{args.first_seed}" / "summary.json").is_file()}
    if set(ENSEMBLE) <= have_first_seed and rerun & set(ENSEMBLE):
        results["ensemble"] = ensemble(runs_dir, args.first_seed, ENSEMBLE)
    previous_path = args.out_dir / "accuracy.json"
    if args.keep_others and previous_path.is_file():
        previous = json.loads(previous_path.read_text())
        for row in previous["models"]:
            if row["model"] not in rerun:
                row.setdefault("kept_from", row.get("date") or previous["date"])
                results["models"].append(row)
        if "ensemble" not in results and previous.get("ensemble") and not rerun & set(previous["ensemble"]["models"]):
            results["ensemble"] = previous["ensemble"]
        order = {m: i for i, m in enumerate(MODELS)}
        results["models"].sort(key=lambda r: order.get(r["model"], len(order)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results["load_average_after"] = load_average()
    (args.out_dir / "accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "accuracy.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.out_dir / 'accuracy.json'} and {args.out_dir / 'accuracy.md'}")
    if args.out_dir.resolve() == (ROOT / "benchmarks" / "results").resolve():  # the published figures
        write_readme_records(ROOT / "README.md", results)
        print(f"wrote the records table of {ROOT / 'README.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
