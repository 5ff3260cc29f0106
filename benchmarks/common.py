"""Shared by the benchmarks: the machine they ran on, the tiny net's recipe, and result files.

Every benchmark prints its figures with the machine and writes ``benchmarks/results/<name>.json``
holding the figures, the command, the time and the machine (including the load average before
and after: on a shared machine the figures are only as good as that load is low).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its live child processes (DataLoader
    workers); children are found through /proc, so on other systems only this process counts."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:  # utime and stime: fields 14 and 15 of /proc/<pid>/stat, after "(name)"
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass  # the child ended meanwhile
    return total


def machine() -> dict:
    """What the figures depend on: hardware, library versions, threads, current load."""
    import lightning
    import torch
    import torchvision

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    elif torch.backends.mps.is_available():
        info["gpu"] = "Apple MPS"
    return info


def describe(info: dict) -> str:
    load = info["load_average_1_5_15min"]
    return (
        f"{info['cpu']}, {info['usable_cpus']} usable CPUs, torch {info['torch']} "
        f"({info['torch_threads']} threads), lightning {info['lightning']}, GPU: {info['gpu'] or 'none'}, "
        f"load average {load[0] if load else '?'}"
    )


def add_threads_option(parser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 avoids thread oversubscription "
                             "when other work keeps the cores busy)")


def start(args) -> dict:
    """Apply ``--threads`` to this process and describe the machine the figures come from."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    info = machine()
    print(f"Machine: {describe(info)}")
    return info


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def tiny_recipe() -> dict:
    """The tiny net's config as it is now in conf/model/tiny.yaml (read at run time: the recipe
    is tuned separately), resolved to plain values: net, optimizer, scheduler, batch size."""
    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"), resolve=True)
    data = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "mnist.yaml"))
    return {
        "net": conf["model"]["net"],
        "optimizer": conf["model"]["optimizer"],
        "scheduler": conf["model"].get("scheduler"),
        "batch_size": conf.get("data", {}).get("batch_size", data["batch_size"]),
    }


def spread(values) -> dict:
    """Median and range of repeated rounds: what every timing figure here reports."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_result(name: str, figures: dict, started_machine: dict, results_dir: Path = RESULTS) -> Path:
    """``benchmarks/results/<name>.json`` (or ``results_dir/<name>.json``), written atomically."""
    record = {
        "benchmark": name,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": started_machine,
        "load_average_after": load_average(),
        **figures,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def timed_rounds(seeds, one_round, line, keep_in: Path | None = None) -> list[dict]:
    """``one_round(seed, run_dir)`` for each seed, each in a fresh run folder (``keep_in/seed<S>``,
    kept; else a temporary one); prints ``line(record)`` as each ends. What the whole-command
    benchmarks share."""
    import tempfile

    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            run_dir = (keep_in or Path(tmp)) / f"seed{seed}"
            if run_dir.exists():
                sys.exit(f"{run_dir} exists: name an empty --runs-dir")
            rounds.append(one_round(seed, run_dir))
            print(line(rounds[-1]), flush=True)
    return rounds
