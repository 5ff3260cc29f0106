"""An Optuna sweeper whose study outlives the process: ``hparams_search=tiny_optuna``.

Hydra's Optuna sweeper already loads a study that exists in ``hydra.sweeper.storage``. This
subclass adds what continuing a study and sharing it between processes need:

- the SQLite file's folder is created, and the study is created under a file lock, so that two
  processes starting together on a new file do not both try to create it;
- each launch on a study gets its own sampler seed (the configured one, plus the number of
  launches before it): with one seed, every launch would repeat the first launch's random
  start-up trials;
- every job learns its trial number in the study (``hydra.job.env_set.OPTUNA_TRIAL_NUMBER``), so
  that its directory is named by it: job numbers restart at 0 in every process, trial numbers
  do not;
- a search none of whose trials finished (every one over ``max_params``, say) ends with one line
  naming the first failure, instead of Optuna's "Record does not exist" from asking for the best;
- ``seeds=[42,43,44]`` trains each trial once per seed and scores it by the mean of their
  returns: one seed's validation accuracy ranks seed noise when the differences are 0.05 points;
- settings it cannot run with (``n_trials=0``, ``n_jobs=0``, a storage that is no database, is
  read-only or locked) are refused in one line naming the key, before the study or any folder is
  touched, instead of SQLAlchemy's tracebacks.

Hydra loads sweepers only from the ``hydra_plugins`` package, hence this module's place.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import os
import sqlite3
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)

TRIAL_NUMBER = "OPTUNA_TRIAL_NUMBER"  # under hydra.job.env_set: the sweep subdir interpolates it
LAUNCHES = "launches"  # study user attribute: how many sweeps have run on this study
BY_SEED = "value_by_seed"  # trial user attribute, with ``seeds``: each seed's return
BUSY_TIMEOUT_S = 3  # how long a locked SQLite database is waited for before the search is refused


def sqlite_file(storage: Any) -> Path | None:
    """The database file of an SQLite storage URL, else None."""
    from sqlalchemy.engine import make_url

    if not isinstance(storage, str) or not storage.startswith("sqlite"):
        return None
    url = make_url(storage)
    database = url.database if url.get_backend_name() == "sqlite" else None
    return Path(database) if database and database != ":memory:" else None


class Refused(CompactHydraException):
    """The search cannot go on, for a reason its one-line message gives; StudySweeper turns it into
    a SystemExit (see ``_in_one_line``)."""


class NoTrialFinished(Refused):
    """A search none of whose trials finished."""


class SeedsConflict(Refused):
    """``hydra.sweeper.seeds`` and a ``seed`` override (or search parameter) at once."""


class SettingRefused(Refused):
    """A ``hydra.sweeper`` setting the search cannot run with, found before the study is touched."""


@contextlib.contextmanager
def _in_one_line() -> Iterator[None]:
    """Hydra prints a CompactHydraException's message, then "Set the environment variable
    HYDRA_FULL_ERROR=1 for a complete stack trace."; a SystemExit passes its handler, and Python
    prints the message alone and exits with status 1 (as cnn_lightning.train's refusals do)."""
    try:
        yield
    except Refused as refused:
        raise SystemExit(str(refused)) from None


def check_count(key: str, value: Any) -> None:
    """``hydra.sweeper.<key>`` must be a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingRefused(f"hydra.sweeper.{key}={value}: must be a whole number of at least 1")


def check_storage(storage: Any) -> None:
    """Refuse a ``hydra.sweeper.storage`` the study cannot live in, before anything is written: a
    URL that SQLAlchemy cannot parse or has no dialect or installed driver for; for SQLite, a
    path that is a folder or cannot be created, a file that is no SQLite database, a read-only
    database or folder, and a database another process holds locked (waited BUSY_TIMEOUT_S for)."""
    if storage is None:  # in memory
        return
    key = f"hydra.sweeper.storage={storage}"
    if not isinstance(storage, str):
        raise SettingRefused(f"{key}: not a database URL such as sqlite:///optuna.db")
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url

    try:
        create_engine(storage).dispose()  # parses the URL, loads its dialect and driver; connects to nothing
    except exc.NoSuchModuleError:
        raise SettingRefused(f"{key}: unknown kind of database {make_url(storage).drivername!r}") from None
    except exc.ArgumentError:
        raise SettingRefused(f"{key}: not a database URL such as sqlite:///optuna.db") from None
    except ImportError as err:
        raise SettingRefused(f"{key}: its database driver is not installed ({err})") from None
    database = sqlite_file(storage)
    if database is not None:
        _check_sqlite_file(key, database)


def _check_sqlite_file(key: str, database: Path) -> None:
    if database.is_dir():
        raise SettingRefused(f"{key}: {database} is a folder, not a database file")
    if not database.exists():  # created by the search: its nearest existing folder must take it
        existing = next(p for p in [database.parent, *database.parent.parents] if p.exists())
        if not existing.is_dir():
            raise SettingRefused(f"{key}: cannot create {database}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SettingRefused(f"{key}: cannot create {database}: {existing} is read-only")
        return
    if not os.access(database, os.W_OK):
        raise SettingRefused(f"{key}: {database} is read-only")
    if not os.access(database.parent, os.W_OK | os.X_OK):
        raise SettingRefused(f"{key}: {database} is in a read-only folder, where SQLite must write its journal")
    try:  # read-write but never created: mode=rw
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True,
                                                timeout=BUSY_TIMEOUT_S, isolation_level=None)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header; waits out a writer
            db.execute("BEGIN IMMEDIATE")  # the lock a writer takes, and nothing written
            db.execute("ROLLBACK")
    except sqlite3.Error as err:
        name = getattr(err, "sqlite_errorname", "")  # Python 3.11+; before it, only the message tells
        if name == "SQLITE_NOTADB" or "not a database" in str(err):
            raise SettingRefused(f"{key}: {database} is not an SQLite database") from None
        if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(err):
            raise SettingRefused(f"{key}: {database} is locked by another process (waited {BUSY_TIMEOUT_S} s)") from None
        raise SettingRefused(f"{key}: {database}: {err}") from None


class StudySweeper(OptunaSweeper):
    def __init__(self, *args: Any, seeds: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seeds = [int(s) for s in seeds] if seeds else []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        with _in_one_line():
            self._setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        impl = self.sweeper
        # before the study is made or loaded, and before Hydra makes the sweep folder (at launch)
        check_count("n_trials", impl.n_trials)
        check_count("n_jobs", impl.n_jobs)
        self._check_seeds(list(config.hydra.overrides.task))  # the arguments sweep() will be given
        check_storage(impl.storage)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if impl.storage is not None:
            launches = self._register_launch(impl)
            seed = config.hydra.sweeper.sampler.get("seed")
            if launches and seed is not None:
                impl.sampler = instantiate(config.hydra.sweeper.sampler, seed=int(seed) + launches)
                log.info("Study %s: launch %d, sampler seed %d", impl.study_name, launches + 1, int(seed) + launches)
        configure = impl._configure_trials  # overrides per trial; the trials carry their numbers

        seeds, batch = self.seeds, []

        def numbered(trials, *args, **kwargs):
            overrides = configure(trials, *args, **kwargs)
            batch[:] = trials
            jobs = []
            for trial, job in zip(trials, overrides, strict=True):
                job = (*job, f"+hydra.job.env_set.{TRIAL_NUMBER}={trial.number}")
                jobs += [(*job, f"seed={seed}") for seed in seeds] if seeds else [job]
            return jobs

        impl._configure_trials = numbered
        self.finished, self.first_failure = 0, None
        launch = impl.launcher.launch

        def counted(*args, **kwargs):
            returns = launch(*args, **kwargs)
            failures = [r._return_value for r in returns if r.status == JobStatus.FAILED]
            self.first_failure = self.first_failure or (failures[0] if failures else None)
            if seeds:  # one return per trial, as the Optuna sweeper expects; its job count stays right
                returns = [self._mean_over_seeds(trial, returns[i * len(seeds):(i + 1) * len(seeds)])
                           for i, trial in enumerate(batch)]
                impl.job_idx += len(batch) * (len(seeds) - 1)
            self.finished += sum(r.status == JobStatus.COMPLETED for r in returns)
            return returns

        impl.launcher.launch = counted

    def _mean_over_seeds(self, trial, returns: list[JobReturn]) -> JobReturn:
        """The trial's return: the mean of its seeds' returns, or its first failed job."""
        failed = next((r for r in returns if r.status != JobStatus.COMPLETED), None)
        if failed is not None:
            return failed
        not_a_number = next((r for r in returns if not isinstance(r.return_value, numbers.Real)), None)
        if not_a_number is not None:  # the Optuna sweeper fails the trial, saying so
            return not_a_number
        values = {seed: float(r.return_value) for seed, r in zip(self.seeds, returns, strict=True)}
        trial.set_user_attr(BY_SEED, {str(seed): value for seed, value in values.items()})
        mean = copy.copy(returns[0])
        mean.return_value = statistics.fmean(values.values())
        log.info("Trial %d: %.6f, the mean of seeds %s", trial.number, mean.return_value,
                 ", ".join(f"{seed}: {value:.6f}" for seed, value in values.items()))
        return mean

    def sweep(self, arguments: list[str]) -> Any:
        with _in_one_line():
            return self._sweep(arguments)

    def _check_seeds(self, arguments: list[str]) -> None:
        """``seeds`` without a repeat, and beside no ``seed`` override or search parameter."""
        if not self.seeds:
            return
        if len(set(self.seeds)) != len(self.seeds):
            raise SeedsConflict(f"hydra.sweeper.seeds repeats a seed: {self.seeds}")
        # imported here: the package imports torch, and Hydra's plugin scan imports this module at every start
        from cnn_lightning.config import override_key

        keys = [override_key(a) for a in arguments] + list(self.sweeper.params or {})
        if "seed" in keys:
            raise SeedsConflict(f"hydra.sweeper.seeds={self.seeds} gives each trial its seeds; drop the seed override")

    def _sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError:  # optuna's best_trial of a study with no finished trial
            if self.finished or self.first_failure is None:
                raise
            first = f"{type(self.first_failure).__name__}: {self.first_failure}"
            raise NoTrialFinished(f"Study {self.sweeper.study_name}: no trial finished; the first failed with {first}") from None

    @staticmethod
    def _register_launch(impl) -> int:
        """Create the study if new and count this launch; return the number of launches before it."""
        import optuna
        from filelock import FileLock
        from optuna.exceptions import StorageInternalError
        from sqlalchemy.exc import SQLAlchemyError

        database = sqlite_file(impl.storage)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{database}.lock") if database is not None else None
        if lock is not None:
            lock.acquire()
        try:
            study = optuna.create_study(
                study_name=impl.study_name, storage=impl.storage, directions=impl._get_directions(), load_if_exists=True,
            )
            launches = int(study.user_attrs.get(LAUNCHES, 0))
            study.set_user_attr(LAUNCHES, launches + 1)
        except (SQLAlchemyError, StorageInternalError) as err:  # what check_storage could not foresee
            first = str(err.__cause__ or err).splitlines()[0]
            raise SettingRefused(f"hydra.sweeper.storage={impl.storage}: {first}") from None
        finally:
            if lock is not None:
                lock.release()
        return launches
