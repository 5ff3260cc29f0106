"""How much the TensorBoard monitoring callbacks slow a training epoch.

Short real runs of the entry point (``python -m cnn_lightning.train``), two ways:

1. Profile: one run with every monitoring callback at its default setting and Lightning's
   ``SimpleProfiler``, which times every callback hook call. ``EpochTimer`` (benchmarks/timing.py)
   records, per epoch, the epoch's wall time and the seconds each callback spent in its hooks.
   A callback's overhead is its seconds over the epoch's time without any monitoring callback
   (epoch time minus all of theirs). Both come from the same epoch under the same load, so
   this ratio holds up on a busy shared machine.
2. A/B: runs with no monitoring callback and with all of them, alternated, ``--repeats``
   times; the minimum epoch time (wall and CPU) of each is compared. Other load only ever adds
   time, but on a loaded machine this is the noisier figure; it checks the profile's sum.

The epochs are short (``--batches``, default 100, against 429 in a real epoch), so fixed costs
per epoch (images, validation work) weigh several times more here than in real training: the
figures are upper bounds. With 2 epochs the last one is where FeatureMaps writes (it writes
every 5 epochs and after the last), so the last epoch is its worst case. Callbacks that work
only before the first batch (input grid, graph, summary text) are reported as one-off seconds.

    python benchmarks/callback_overhead.py                 # 100 batches x 2 epochs, A/B twice
    python benchmarks/callback_overhead.py --batches 50 --repeats 1

Prints a table and writes ``benchmarks/results/callback_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
MONITORING = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/callbacks/tensorboard.yaml"))
CLASS_TO_NAME = {conf["_target_"].rsplit(".", 1)[1]: name for name, conf in MONITORING.items()}
ALWAYS_OFF = ["progress_bar"]  # terminal output, not monitoring: off in every run
ONE_OFF_HOOKS = ("setup", "on_fit_start", "on_train_start", "on_fit_end", "teardown")


def run_once(keep: bool, args, workdir: Path, profile: bool = False) -> list[dict]:
    """One training run; the EpochTimer records (one per epoch, one for the test)."""
    timer = workdir / "times.jsonl"
    removed = ALWAYS_OFF + ([] if keep else list(MONITORING))
    command = [
        sys.executable, "-m", "cnn_lightning.train",
        f"model={args.model}", f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.batches}",
        f"hydra.run.dir={workdir}",
        "+callbacks.epoch_timer._target_=timing.EpochTimer",
        f"+callbacks.epoch_timer.path={timer}",
        *(f"~callbacks.{name}" for name in removed),
        *(["trainer.profiler=simple"] if profile else []),
    ]
    # benchmarks/ on the path: the run instantiates timing.EpochTimer from there
    path = os.pathsep.join(filter(None, [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, HYDRA_FULL_ERROR="1", PYTHONPATH=path))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in timer.read_text().splitlines()]


def per_callback(hooks: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """{config name: seconds} in the epoch's own work and in one-off (fit start) hooks."""
    work, one_off = defaultdict(float), defaultdict(float)
    for action, seconds in hooks.items():
        owner, hook = action.removeprefix("[Callback]").rsplit(".", 1)
        name = CLASS_TO_NAME.get(owner.split("{")[0])
        if name is not None:
            (one_off if hook in ONE_OFF_HOOKS else work)[name] += seconds
    return dict(work), dict(one_off)


def profile(args, tmp: Path) -> dict:
    records = run_once(True, args, tmp / "profile", profile=True)
    epochs = [r for r in records if r["stage"] == "epoch"]
    (test,) = [r for r in records if r["stage"] == "test"]
    rows: dict[str, dict] = {name: {"epoch_s": [], "epoch_pct": []} for name in MONITORING}
    for record in epochs:
        work, _ = per_callback(record["hooks"])
        bare = record["seconds"] - sum(work.values())  # the epoch without monitoring
        for name in MONITORING:
            rows[name]["epoch_s"].append(round(work.get(name, 0.0), 4))
            rows[name]["epoch_pct"].append(round(100 * work.get(name, 0.0) / bare, 2))
    test_work, _ = per_callback(test["hooks"])
    test_bare = test["seconds"] - sum(test_work.values())
    (start,) = [r for r in records if r["stage"] == "start"]
    one_off = {**per_callback(start["hooks"])[0], **per_callback(start["hooks"])[1]}
    for name, row in rows.items():
        row["last_epoch_pct"] = row["epoch_pct"][-1]
        row["max_epoch_pct"] = max(row["epoch_pct"])
        row["test_pct"] = round(100 * test_work.get(name, 0.0) / test_bare, 2)
        row["fit_start_s"] = round(one_off.get(name, 0.0), 4)
    all_pct = [round(100 * sum(per_callback(r["hooks"])[0].values())
                     / (r["seconds"] - sum(per_callback(r["hooks"])[0].values())), 2) for r in epochs]
    return {"records": records, "callbacks": rows, "all_epoch_pct": all_pct}


def ab(args, tmp: Path) -> dict:
    samples = {"none": [], "all": []}
    for repeat in range(args.repeats):
        for name in samples:
            records = run_once(name == "all", args, tmp / f"ab_{repeat}_{name}")
            last = [r for r in records if r["stage"] == "epoch"][-1]
            (test,) = [r for r in records if r["stage"] == "test"]
            samples[name].append({"epoch_s": last["seconds"], "epoch_cpu_s": last["cpu_seconds"],
                                  "test_s": test["seconds"], "test_cpu_s": test["cpu_seconds"]})
            print(f"  A/B {repeat + 1}/{args.repeats} {name:4s}: last epoch {last['seconds']:6.2f} s "
                  f"(CPU {last['cpu_seconds']:6.2f} s), test {test['seconds']:5.2f} s", flush=True)
    result = {"runs": samples}
    for key in ("epoch_s", "epoch_cpu_s", "test_s", "test_cpu_s"):
        none, every = (min(s[key] for s in samples[n]) for n in ("none", "all"))
        result[f"{key}_min_none"], result[f"{key}_min_all"] = round(none, 3), round(every, 3)
        result[f"{key}_overhead_pct"] = round(100 * (every / none - 1), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100, help="training batches of 128 per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="A/B pairs; 0 skips the A/B runs")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/callback_overhead.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="callback_overhead_") as tmp:
        print("profile run (all monitoring callbacks, SimpleProfiler) ...", flush=True)
        prof = profile(args, Path(tmp))
        print(f"\n{'callback':20s} {'s/epoch (last)':>14s} {'% of epoch: last':>17s} {'max':>6s}"
              f" {'% of test':>10s} {'fit start s':>12s}")
        for name, row in prof["callbacks"].items():
            print(f"{name:20s} {row['epoch_s'][-1]:14.3f} {row['last_epoch_pct']:16.2f}% "
                  f"{row['max_epoch_pct']:5.2f}% {row['test_pct']:9.2f}% {row['fit_start_s']:12.3f}")
        print(f"{'all together':20s} {'':14s} {prof['all_epoch_pct'][-1]:16.2f}% {max(prof['all_epoch_pct']):5.2f}%")
        comparison = None
        if args.repeats:
            print("\nA/B runs ...", flush=True)
            comparison = ab(args, Path(tmp))
            print(f"A/B, min over {args.repeats}: last epoch {comparison['epoch_s_overhead_pct']:+.1f}% wall, "
                  f"{comparison['epoch_cpu_s_overhead_pct']:+.1f}% CPU; test {comparison['test_s_overhead_pct']:+.1f}% wall")
    report = {
        "command": " ".join(["python", "benchmarks/callback_overhead.py", *sys.argv[1:]]),
        "model": args.model, "train_batches_per_epoch": args.batches, "epochs": args.epochs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
        "profile": prof, "ab": comparison,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
