"""DDP teardown, run after run: ``trainer=ddp_sim`` (2 CPU processes, gloo, spawn) N times in a row.

    OMP_NUM_THREADS=1 python benchmarks/ddp_teardown.py            # 30 runs
    OMP_NUM_THREADS=1 python benchmarks/ddp_teardown.py --runs 5   # a quick check

Each run is the real training command, short (a few batches of fit, validation and test), so that
what is exercised is the start and the end of the distributed processes: rank 1 used to abort
at teardown ("terminate called without an active exception", SIGABRT) in about 4 runs in 13,
because the gloo process group outlived the rank 0 process that hosted its store
(cnn_lightning/distributed.py). A run is clean when it exits 0, writes its summary, and its output
holds no abort, no "terminate called" and no traceback. Writes
``benchmarks/results/ddp_teardown.json``: the count, and each run's exit code and wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, write_result

SHORT = [
    "trainer=ddp_sim",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "~callbacks.progress_bar",
]
BAD_OUTPUT = re.compile(r"terminate called|Abort|core dumped|Traceback|exited with exit code|SIGABRT")


def one_run(run_dir: Path) -> dict:
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    result = subprocess.run(
        [sys.executable, "-m", "cnn_lightning.train", *SHORT, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    bad = BAD_OUTPUT.search(output)
    clean = result.returncode == 0 and not bad and (run_dir / "summary.json").is_file()
    return {
        "returncode": result.returncode, "clean": clean, "wall_s": round(time.perf_counter() - started, 1),
        "problem": None if clean else (bad.group(0) if bad else f"exit {result.returncode}"),
        "tail": None if clean else output[-1500:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    info = machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="ddp-teardown-") as tmp:
        for i in range(args.runs):
            runs.append(one_run(Path(tmp) / f"run{i:02d}"))
            r = runs[-1]
            print(f"run {i + 1:2d}/{args.runs}: {'clean' if r['clean'] else 'FAILED: ' + r['problem']} "
                  f"({r['wall_s']} s)", flush=True)
            if not r["clean"]:
                print(r["tail"], flush=True)
    clean = sum(r["clean"] for r in runs)
    print(f"{clean}/{args.runs} clean")
    write_result("ddp_teardown", {"runs": args.runs, "clean": clean, "per_run": runs}, info)
    sys.exit(0 if clean == args.runs else 1)


if __name__ == "__main__":
    main()
