"""Hostile input to the sweep command and the Optuna study sweeper: one line, a non-zero exit, and
the file system as it was.

Every case is a real subprocess of the real command (``python -m cnn_lightning.sweep <dir>``,
``python -m cnn_lightning.train hparams_search=tiny_optuna ...``) on real SQLite files, read-only
and full tmpfs mounts and a database another connection holds locked. Refusals come before any
training, so nothing trains; the cases run a few at a time (each command spends its seconds
importing torch), and each row then checks its own: the exit status, exactly one non-empty line
on stderr, nothing on stdout, and every file and folder under its root unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, train_env

from cnn_lightning import sweep

SEARCH = ["cnn_lightning.train", "hparams_search=tiny_optuna"]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]


class CannotMount(Exception):
    """This machine will not mount a tmpfs here (not root, or no mount rights)."""


def fingerprint(root: Path, folder_mtimes: bool = True) -> dict[str, tuple]:
    """Every file (size, mtime, content hash) and folder (entries, and mtime unless not
    ``folder_mtimes``) under ``root``."""
    seen = {}
    for path in [root, *root.rglob("*")]:
        stat = path.lstat()
        if path.is_dir():
            entries = sorted(p.name for p in path.iterdir())
            seen[str(path)] = ("dir", entries, stat.st_mtime_ns if folder_mtimes else None)
        else:
            seen[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return seen


def mount(stack: contextlib.ExitStack, *args: str) -> None:
    """``mount *args``, undone (by its target, the last argument) when ``stack`` closes."""
    if os.geteuid() != 0 or subprocess.run(["mount", *args], capture_output=True).returncode != 0:
        raise CannotMount(" ".join(args))
    if "remount" not in " ".join(args):
        stack.callback(subprocess.run, ["umount", args[-1]], check=False)


def study(path: Path) -> Path:
    """A real Optuna study database at ``path``: tiny_optuna's, with no trial yet."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="tiny_optuna", storage=f"sqlite:///{path}", direction="maximize")
    return path


def storage(path: Path) -> str:
    return f"hydra.sweeper.storage=sqlite:///{path}"


def in_read_only_mount(root: Path, stack: contextlib.ExitStack) -> Path:
    """A study database on a tmpfs mounted read-only after the study was made."""
    folder = root / "ro"
    folder.mkdir()
    mount(stack, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder))
    study(folder / "optuna.db")
    mount(stack, "-o", "remount,ro", str(folder))
    return folder / "optuna.db"


def read_only_file(root: Path, stack: contextlib.ExitStack) -> Path:
    """A study database that is read-only (bound onto itself read-only) in a writable folder:
    file modes do not stop root."""
    database = study(root / "optuna.db")
    if os.geteuid() != 0:
        database.chmod(0o444)
        return database
    mount(stack, "--bind", str(database), str(database))
    mount(stack, "-o", "remount,ro,bind", str(database))
    return database


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """root/optuna.db held with ``BEGIN EXCLUSIVE`` by a connection of this process while the command
    runs. Taken after the fingerprint and given back before the next: reading the file in this
    process would drop the lock (POSIX locks go with any close of the file)."""
    with contextlib.closing(sqlite3.connect(root / "optuna.db", isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        yield
        holder.execute("ROLLBACK")


def full_disk(root: Path, stack: contextlib.ExitStack) -> Path:
    """A 64 KiB tmpfs filled until the next write fails, with an old leaderboard on it."""
    disk = root / "disk"
    disk.mkdir()
    mount(stack, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk))
    (disk / "leaderboard.md").write_text("the old leaderboard\n")
    with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"x" * 512)
    return disk


def read_only_folder(root: Path, stack: contextlib.ExitStack) -> Path:
    folder = root / "ro"
    folder.mkdir()
    mount(stack, "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder))
    return folder


def text_file(root: Path) -> Path:
    notes = root / "notes.db"
    notes.write_text("these are my notes, not a database\n")
    return notes


@dataclass
class Case:
    id: str
    args: Callable[[Path, contextlib.ExitStack], list[str]]  # the command after ``python -m``, given its root
    says: str  # what its one line must say; {root}: the case's root folder
    during: Callable[[Path], contextlib.AbstractContextManager] = lambda root: contextlib.nullcontext()
    # False where a temporary file is made and removed again (a full disk): its folder's mtime moves
    folder_mtimes: bool = True


def search(*overrides: str) -> Callable[[Path, contextlib.ExitStack], list[str]]:
    """The search with ``overrides`` on an existing study in root/optuna.db, its sweep folder under root."""
    def args(root: Path, stack: contextlib.ExitStack) -> list[str]:
        study(root / "optuna.db")
        return [*SEARCH, *overrides, f"paths.log_dir={root}"]
    return args


def search_on(make_storage: Callable[[Path, contextlib.ExitStack], str]) -> Callable[[Path, contextlib.ExitStack], list[str]]:
    """One trial of the search on the storage ``make_storage`` makes under root, its sweep folder under root."""
    return lambda root, stack: [*SEARCH, "hydra.sweeper.n_trials=1", *SHORT, make_storage(root, stack),
                                f"paths.log_dir={root}"]


CASES = [
    Case("n_trials=0", search("hydra.sweeper.n_trials=0"),
         "hydra.sweeper.n_trials=0: must be a whole number of at least 1"),
    Case("n_trials=-3", search("hydra.sweeper.n_trials=-3"), "hydra.sweeper.n_trials=-3: must be a whole number"),
    Case("n_trials=1.5", search("hydra.sweeper.n_trials=1.5"), "hydra.sweeper.n_trials=1.5: must be a whole number"),
    Case("n_trials=many", search("hydra.sweeper.n_trials=many"), "hydra.sweeper.n_trials=many: must be a whole number"),
    Case("n_jobs=0", search("hydra.sweeper.n_jobs=0"), "hydra.sweeper.n_jobs=0: must be a whole number of at least 1"),
    Case("seeds=[1,1]", search("hydra.sweeper.seeds=[1,1]"),
         "hydra.sweeper.seeds repeats a seed: [1, 1]"),
    Case("pruner with storage=null", search("hydra.sweeper.storage=null",
                                            "+hydra.sweeper.pruner._target_=optuna.pruners.MedianPruner"),
         "hydra.sweeper.pruner: the jobs report to their trials in hydra.sweeper.storage, which is null"),
    Case("storage=text file", search_on(lambda root, stack: storage(text_file(root))),
         "sqlite:///{root}/notes.db: {root}/notes.db is not an SQLite database"),
    Case("storage=read-only file", search_on(lambda root, stack: storage(read_only_file(root, stack))),
         "optuna.db is read-only"),
    Case("storage=in read-only folder", search_on(lambda root, stack: storage(in_read_only_mount(root, stack))),
         "optuna.db is read-only"),
    Case("storage=new file in read-only folder",
         search_on(lambda root, stack: storage(read_only_folder(root, stack) / "new" / "optuna.db")),
         "cannot create {root}/ro/new/optuna.db: {root}/ro is read-only"),
    Case("storage=locked", search_on(lambda root, stack: storage(study(root / "optuna.db"))),
         "optuna.db is locked by another process", during=locked),
    Case("storage=folder", search_on(lambda root, stack: storage(root)),
         "sqlite:///{root}: {root} is a folder, not a database file"),
    Case("storage=under a file", search_on(lambda root, stack: storage(text_file(root) / "optuna.db")),
         "notes.db is not a folder"),
    Case("storage=foo://x", search_on(lambda root, stack: "hydra.sweeper.storage=foo://x"),
         "hydra.sweeper.storage=foo://x: unknown kind of database 'foo'"),
    Case("storage=unparsable", search_on(lambda root, stack: "hydra.sweeper.storage=not a url"),
         "hydra.sweeper.storage=not a url: not a database URL such as sqlite:///optuna.db"),
    Case("storage=driver missing", search_on(lambda root, stack: "hydra.sweeper.storage=mysql://me@localhost/optuna"),
         "hydra.sweeper.storage=mysql://me@localhost/optuna: its database driver is not installed"),
    Case("sweep missing folder", lambda root, stack: ["cnn_lightning.sweep", str(root / "missing")],
         "sweep: {root}/missing: no such folder"),
    Case("sweep a file", lambda root, stack: ["cnn_lightning.sweep", str(text_file(root))],
         "sweep: {root}/notes.db: not a folder"),
    Case("sweep read-only folder", lambda root, stack: ["cnn_lightning.sweep", str(read_only_folder(root, stack))],
         "sweep: {root}/ro: cannot write the leaderboard: Read-only file system"),
    Case("sweep full disk", lambda root, stack: ["cnn_lightning.sweep", str(full_disk(root, stack))],
         "sweep: {root}/disk: cannot write the leaderboard: No space left on device", folder_mtimes=False),
]


def run(args: list[str], during: contextlib.AbstractContextManager) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m *args`` while ``during`` holds; a command that hangs fails its row alone."""
    with during:
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=train_env(), capture_output=True,
                                  text=True, timeout=120)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(args, -9, "", "killed after 120 s\n")
        return done, time.monotonic() - started


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple | str]:
    """Every case run, three at a time: {id: (root, result, seconds, fingerprint before, after)}, or the
    reason it could not be set up here."""
    results: dict[str, tuple | str] = {}
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=3) as pool:
        started = {}
        for case in CASES:
            if case.id == "storage=driver missing" and importlib.util.find_spec("MySQLdb"):
                results[case.id] = "MySQLdb is installed here"
                continue
            root = tmp_path_factory.mktemp("case")
            try:
                args = case.args(root, stack)
            except CannotMount as err:
                results[case.id] = f"cannot mount tmpfs here: {err}"
                continue
            before = fingerprint(root, case.folder_mtimes)
            started[case.id] = (root, before, pool.submit(run, args, case.during(root)))
        for case in CASES:
            if case.id in started:
                root, before, future = started[case.id]
                results[case.id] = (root, *future.result(), before, fingerprint(root, case.folder_mtimes))
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_in_one_line_and_nothing_written(case, outcomes):
    outcome = outcomes[case.id]
    if isinstance(outcome, str):
        pytest.skip(outcome)
    root, done, seconds, before, after = outcome
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    assert case.says.format(root=root) in lines[0], lines[0]
    assert not done.stdout.strip(), done.stdout[-3000:]
    assert after == before, "the refused command changed the file system"
    assert seconds < 60, f"took {seconds:.0f} s"  # a locked database is waited for a few seconds, not forever


def test_table_has_every_kind_of_case():
    assert len(CASES) >= 15 and len({c.id for c in CASES}) == len(CASES)


def test_write_atomically_removes_its_temporary_file_when_interrupted(tmp_path, monkeypatch):
    board = tmp_path / "leaderboard.md"
    board.write_text("old\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.write_atomically(board, "new\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.md"]
    assert board.read_text() == "old\n"


def test_write_atomically_on_a_full_disk_keeps_the_old_file(tmp_path):
    with contextlib.ExitStack() as stack:
        try:
            disk = full_disk(tmp_path, stack)
        except CannotMount as err:
            pytest.skip(f"cannot mount tmpfs here: {err}")
        before = fingerprint(disk, folder_mtimes=False)
        with pytest.raises(OSError, match="No space left"):
            sweep.write_atomically(disk / "leaderboard.md", "the new leaderboard\n" * 1000)
        assert fingerprint(disk, folder_mtimes=False) == before
        assert (disk / "leaderboard.md").read_text() == "the old leaderboard\n"
