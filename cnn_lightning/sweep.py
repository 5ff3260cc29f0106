"""The leaderboard of a sweep: one row per job, best checkpoints per architecture.

Written at the sweep root by a Hydra callback when a multirun ends, or at any time with
``python -m cnn_lightning.sweep <dir>`` (a sweep directory, or the whole outputs root).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnn_lightning.checkpoints import RunRecord, find_runs
from cnn_lightning.records import RecordError, read_overrides

log = logging.getLogger(__name__)

COLUMNS = ["rank", "model", "overrides", "params", "val_acc", "test_acc", "epochs", "seed", "wall_time_s", "checkpoint", "status"]


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    write_all_atomically({path: text})


def write_all_atomically(files: dict[Path, str]) -> None:
    """Write every file whole beside its place, then move each into place. A failure while writing
    (a full disk, Ctrl-C) removes the temporary files and is raised with every old file unchanged."""
    tmps = []
    try:
        for path, text in files.items():
            # One temporary name per process: two sweeps on one study may write the same leaderboard.
            tmps.append((path.with_name(f"{path.name}.{os.getpid()}.tmp"), path))
            tmps[-1][0].write_text(text)
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):  # never written, or already in place
                tmp.unlink()
        raise


def _overrides(run: RunRecord) -> str:
    try:
        return " ".join(read_overrides(run.run_dir / ".hydra" / "overrides.yaml"))
    except RecordError:
        return ""


def leaderboard_rows(root: Path) -> list[dict[str, Any]]:
    """Every run under ``root``: the finished ones ranked by validation accuracy (never test
    accuracy), then those without a finite accuracy (status ``nan``) and the failed jobs
    (status ``failed: <error>``), unranked."""
    rows = []
    for rank, run in enumerate(find_runs(root, include_unusable=True), 1):
        rows.append({
            "rank": rank if run.usable else None, "status": run.status, "model": run.model,
            "overrides": _overrides(run), "params": run.params,
            "val_acc": run.val_acc if run.usable else None, "test_acc": run.test_acc, "epochs": run.epochs,
            "seed": run.seed, "wall_time_s": run.wall_time_s,
            "checkpoint": str(run.checkpoint) if run.usable else "",
        })
    return rows


def best_by_model(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{"overall": best row, "by_model": {model: best row}}; rows come sorted by val acc, and
    unranked (failed or NaN) rows are never best."""
    ranked = [row for row in rows if row["rank"] is not None]
    by_model: dict[str, Any] = {}
    for row in ranked:
        by_model.setdefault(row["model"], row)
    return {"overall": ranked[0] if ranked else None, "by_model": by_model}


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    header = "| # | status | model | overrides | params | val acc | test acc | epochs | wall time | checkpoint |"
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        wall = "" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f} s"
        status = r["status"].replace("|", "/").replace("\n", " ")[:200]
        lines.append(
            f"| {r['rank'] or ''} | {status} | {r['model']} | `{r['overrides']}` | {r['params']:,} | {_pct(r['val_acc'])} | "
            f"{_pct(r['test_acc'])} | {r['epochs']} | {wall} | `{r['checkpoint']}` |"
        )
    return "\n".join(lines) + "\n"


def write_leaderboard(root: str | os.PathLike, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``best.json`` into ``root``: all three
    new, or (when one cannot be written) all three as they were."""
    root = Path(root)
    rows = leaderboard_rows(root) if rows is None else rows
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    best = best_by_model(rows)
    write_all_atomically({
        root / "leaderboard.csv": out.getvalue(),
        root / "leaderboard.md": to_markdown(rows),
        root / "best.json": json.dumps(best, indent=2) + "\n",
    })
    log.info("Leaderboard of %d runs: %s", len(rows), root / "leaderboard.md")
    return best


class LeaderboardCallback(Callback):
    """Hydra callback: after every job of a multirun, (re)write the leaderboard at the sweep root,
    so that a failed job neither hides the others (Hydra never calls ``on_multirun_end`` when a job
    failed) nor vanishes: it is marked by ``failed.json`` in its directory.

    A job stopped by Ctrl-C or SIGTERM stops the sweep: Hydra would count it as one failed job and
    start the next, so a sweep of nine jobs would need nine Ctrl-Cs. In a parallel sweep the
    signal may reach only the parent process (``kill PID``, ``docker stop``), which passes it on to
    the running jobs so that each saves a resumable checkpoint; a second signal stops at once."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            _pass_stop_signals_to_workers(Path(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        from cnn_lightning.saving import Interrupted

        error = job_return._return_value if job_return.status == JobStatus.FAILED else None  # the job's exception
        if error is not None:
            failed = {"model": config.get("model", {}).get("name", "?"), "seed": config.get("seed"),
                      "error": f"{type(error).__name__}: {error}".splitlines()[0][:500]}
            write_atomically(Path(config.hydra.runtime.output_dir) / "failed.json", json.dumps(failed, indent=2) + "\n")
        if config.hydra.mode == RunMode.MULTIRUN:
            _leaderboard_or_warn(config.hydra.sweep.dir)
            if isinstance(error, Interrupted):
                # SystemExit is no Exception: it passes Hydra's handlers and ends the sweep here
                raise SystemExit(f"train: sweep stopped, later jobs not started: {error}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _leaderboard_or_warn(config.hydra.sweep.dir)


def _leaderboard_or_warn(sweep_dir: str) -> None:
    """A full disk or a read-only sweep folder costs the leaderboard, never the sweep: one line,
    and the jobs go on (the command writes it later, once there is room)."""
    try:
        write_leaderboard(sweep_dir)
    except OSError as err:
        log.warning("leaderboard not written (%s: %s); write it later with: python -m cnn_lightning.sweep %s",
                    err.strerror or type(err).__name__, err.filename or sweep_dir, sweep_dir)


def _pass_stop_signals_to_workers(sweep_dir: Path, grace_s: float = 120.0) -> None:
    """Make SIGTERM and SIGINT to this process (the parent of a joblib sweep) reach its worker
    processes: the jobs stop at a batch end and save ``last.ckpt``. The parent waits (at most
    ``grace_s``) until every started job has ended, with a summary or a ``failed.json``, because
    joblib kills the other workers as soon as the first job's stop reaches it. With no worker to
    tell, or at a second signal, the original handlers act at once."""
    from cnn_lightning.saving import STOP_SIGNALS

    original = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    passed_on = False

    def stopping(job: Path) -> bool:
        return not (job / "summary.json").exists() and not (job / "failed.json").exists()

    def pass_on(signum: int, frame: Any) -> None:
        nonlocal passed_on
        workers = multiprocessing.active_children()  # joblib's loky workers are among them
        if passed_on or not workers:
            for s, handler in original.items():
                signal.signal(s, handler)
            signal.raise_signal(signum)
            return
        passed_on = True
        log.warning("%s: stopping the running jobs at their next batch (again to stop at once)",
                    signal.Signals(signum).name)
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(worker.pid, signum)
        jobs = [d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
        deadline = time.monotonic() + grace_s
        while (any(stopping(job) for job in jobs) and any(w.is_alive() for w in workers)
               and time.monotonic() < deadline):
            time.sleep(0.1)
        killed = [w for w in workers if w.exitcode is not None and w.exitcode < 0]
        if killed:  # still starting (importing, before cnn_lightning.train's handlers): joblib would
            # report a TerminatedWorkerError traceback for them; they had nothing to save
            write_leaderboard(sweep_dir)
            raise SystemExit(f"train: sweep stopped by {signal.Signals(signum).name} while {len(killed)} of its "
                             f"jobs were starting (they had nothing to save); leaderboard: {sweep_dir / 'leaderboard.md'}")

    for signum in original:
        signal.signal(signum, pass_on)


def main(argv: list[str] | None = None) -> None:
    """``python -m cnn_lightning.sweep <dir>``: write the leaderboard of ``dir``, then print it. A
    folder that is missing, or cannot take the leaderboard, is refused in one line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m cnn_lightning.sweep <sweep dir or outputs root>")
    root = Path(argv[0])
    if not root.is_dir():
        sys.exit(f"sweep: {root}: {'not a folder' if root.exists() else 'no such folder'}")
    rows = leaderboard_rows(root)
    try:
        write_leaderboard(root, rows)
    except OSError as err:  # a read-only folder, a full disk: nothing of the new leaderboard is left
        sys.exit(f"sweep: {root}: cannot write the leaderboard: {err.strerror or err}")
    print(to_markdown(rows), end="")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
