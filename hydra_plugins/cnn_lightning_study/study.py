"""An Optuna sweeper whose study outlives the process: ``hparams_search=tiny_optuna``.

A Hydra ``Sweeper`` of its own over Optuna's ask-and-tell API (Optuna 4 and 5): the search space
is written in Hydra's override grammar (``interval``, ``choice``, ``range``, ``tag(log, ...)``),
``n_jobs`` trials are asked at a time and launched as one batch by any Hydra launcher, and each
job's return is told to its trial. The study lives in ``hydra.sweeper.storage``; besides what
Hydra's own Optuna sweeper did (whose keys it keeps), it does what continuing a study and sharing
it between processes need:

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
- ``hydra.sweeper.pruner`` (an Optuna pruner): each job reports ``val/acc`` to its trial after
  every validation and stops at the end of the epoch the pruner names (cnn_lightning/pruning.py);
  the trial is told PRUNED;
- settings it cannot run with (``n_trials=0``, ``n_jobs=0``, a storage that is no database, is
  read-only or locked) are refused in one line naming the key, before the study or any folder is
  touched, instead of SQLAlchemy's tracebacks.

Hydra loads sweepers only from the ``hydra_plugins`` package, hence this module's place.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import numbers
import os
import sqlite3
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

TRIAL_NUMBER = "OPTUNA_TRIAL_NUMBER"  # under hydra.job.env_set: the sweep subdir interpolates it
LAUNCHES = "launches"  # study user attribute: how many sweeps have run on this study
BY_SEED = "value_by_seed"  # trial user attribute, with ``seeds``: each seed's return
PRUNED_EPOCH = "pruned_epoch"  # trial user attribute a pruned job sets (cnn_lightning/pruning.py)
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


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override: ``choice``/``range`` are categorical, ``interval``
    is a float (or int, for two whole bounds) range, on a log scale when tagged ``log``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if override.is_choice_sweep() or override.is_range_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    value = override.value()  # an IntervalSweep
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(int(value.start), int(value.end), log=log_scale)
    return FloatDistribution(float(value.start), float(value.end), log=log_scale)


def search_space(overrides: list[Override]) -> tuple[dict[str, Any], dict[str, str]]:
    """({key: distribution} of the sweep overrides, {key: override as given} of the others)."""
    space, fixed = {}, {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if override.is_delete() or override.is_hydra_override():
                raise SettingRefused(f"{override.input_line}: cannot be a search parameter")
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    for key in fixed:
        space.pop(key, None)
    return space, fixed


def grid_choices(space: dict[str, Any]) -> dict[str, list]:
    """GridSampler's search space: every parameter must be a choice or a range."""
    from optuna.distributions import CategoricalDistribution

    for key, dist in space.items():
        if not isinstance(dist, CategoricalDistribution):
            raise SettingRefused(f"hydra.sweeper.params.{key}: the grid sampler takes choice(...) or range(...) only")
    return {key: list(dist.choices) for key, dist in space.items()}


def _tell(study, trial, **kwargs) -> None:
    """``study.tell``; the grid sampler's ``study.stop()`` once every point was asked (it is meant
    for ``study.optimize``, and raises outside it) is let pass: the trial is told already."""
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def _is_grid(sampler: Any) -> bool:
    """A sampler config with ``_partial_: true`` (the grid's): it is made once the search space is known."""
    import optuna

    return callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler)


class StudySweeper(Sweeper):
    def __init__(self, sampler: Any = None, direction: Any = "minimize", storage: Any = None,
                 study_name: str | None = None, n_trials: Any = 20, n_jobs: Any = 2, max_failure_rate: float = 0.0,
                 params: Any = None, seeds: list[int] | None = None, pruner: Any = None) -> None:
        self.sampler, self.pruner, self.storage, self.study_name = sampler, pruner, storage, study_name
        self.directions = [str(d) for d in direction] if isinstance(direction, (list, tuple)) or (
            OmegaConf.is_list(direction)) else [str(direction)]
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, float(max_failure_rate)
        self.params = dict(params or {})
        self.seeds = [int(s) for s in seeds] if seeds else []
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        with _in_one_line():
            self._setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # before the study is made or loaded, and before Hydra makes the sweep folder (at launch)
        check_count("n_trials", self.n_trials)
        check_count("n_jobs", self.n_jobs)
        for direction in self.directions:
            if direction not in ("minimize", "maximize"):
                raise SettingRefused(f"hydra.sweeper.direction={direction}: must be minimize or maximize")
        self._check_seeds(list(config.hydra.overrides.task))  # the arguments sweep() will be given
        if self.seeds and self.pruner is not None:
            raise SettingRefused("hydra.sweeper.pruner with hydra.sweeper.seeds: a trial is the mean of its seeds "
                                 "and cannot be pruned by one of them; drop one of the two")
        if self.pruner is not None and self.storage is None:
            raise SettingRefused("hydra.sweeper.pruner: the jobs report to their trials in hydra.sweeper.storage, "
                                 "which is null (in memory)")
        if self.pruner is not None and len(self.directions) > 1:
            raise SettingRefused("hydra.sweeper.pruner: Optuna cannot prune a study of several objectives")
        check_storage(self.storage)
        self.config, self.hydra_context = config, hydra_context
        self.space, self.fixed = self._space(list(config.hydra.overrides.task))  # refused here if malformed
        if _is_grid(self.sampler):
            grid_choices(self.space)  # refused here if a parameter is an interval
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.launches = 0
        if self.storage is not None:
            self.launches = self._register_launch()
            seed = config.hydra.sweeper.sampler.get("seed")
            if self.launches and seed is not None:
                self.sampler = instantiate(config.hydra.sweeper.sampler, seed=int(seed) + self.launches)
                log.info("Study %s: launch %d, sampler seed %d", self.study_name, self.launches + 1,
                         int(seed) + self.launches)

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

        keys = [override_key(a) for a in arguments] + list(self.params)
        if "seed" in keys:
            raise SeedsConflict(f"hydra.sweeper.seeds={self.seeds} gives each trial its seeds; drop the seed override")

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            return search_space(parser.parse_overrides(lines))
        except (OverrideParseException, ValueError) as err:  # ValueError: Optuna's, of a distribution
            first = str(err).strip().splitlines()[0]
            raise SettingRefused(f"hydra.sweeper.params: {first}") from None

    def _sweep(self, arguments: list[str]) -> Any:
        import optuna

        space, fixed = self._space(arguments)
        sampler, n_trials = self.sampler, self.n_trials
        if _is_grid(sampler):
            grid = grid_choices(space)
            sampler = sampler(grid)
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))
            log.info("Grid sampler: %d trials", n_trials)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                    pruner=self.pruner, directions=self.directions, load_if_exists=True)
        log.info("Study %s in %s: sampler %s, pruner %s, directions %s", study.study_name, self.storage,
                 type(sampler).__name__, type(self.pruner).__name__ if self.pruner else None, self.directions)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        finished, first_failure, left = 0, None, n_trials
        while left > 0:
            batch = [study.ask(fixed_distributions=space) for _ in range(min(self.n_jobs, left))]
            returns = self._launch(batch, fixed)
            failures = []
            for trial, ret in zip(batch, returns, strict=True):
                failure = self._tell(study, trial, ret)
                if failure is None:
                    finished += 1
                else:
                    failures.append(failure)
                    first_failure = first_failure or failure
            if len(failures) / len(batch) > self.max_failure_rate:
                first = f"{type(failures[0]).__name__}: {failures[0]}"
                raise Refused(f"Study {study.study_name}: {len(failures)} of {len(batch)} trials failed "
                              f"(max_failure_rate={self.max_failure_rate}); the first with {first}")
            left -= len(batch)
        return self._results(study, sweep_dir, finished, first_failure)

    def _launch(self, batch: list, fixed: dict[str, str]) -> list[JobReturn]:
        """One job per trial (per seed, with ``seeds``) through the launcher; one return per trial."""
        jobs = []
        for trial in batch:
            job = (*[f"{key}={value}" for key, value in trial.params.items()], *fixed.values(),
                   f"+hydra.job.env_set.{TRIAL_NUMBER}={trial.number}")
            jobs += [(*job, f"seed={seed}") for seed in self.seeds] if self.seeds else [job]
        returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        if not self.seeds:
            return list(returns)
        n = len(self.seeds)
        return [self._mean_over_seeds(trial, returns[i * n:(i + 1) * n]) for i, trial in enumerate(batch)]

    def _tell(self, study, trial, ret: JobReturn) -> Exception | None:
        """Tell the study how the trial's job ended; return its failure, if it failed."""
        from optuna.trial import TrialState

        if ret.status != JobStatus.COMPLETED:
            failure = ret._return_value  # the job's exception (return_value would raise it)
            _tell(study, trial, state=TrialState.FAIL)
            log.warning("Trial %d failed: %s: %s", trial.number, type(failure).__name__, failure)
            return failure
        try:
            values = [float(v) for v in (ret.return_value if len(self.directions) > 1 else [ret.return_value])]
            if len(values) != len(self.directions):
                raise ValueError(f"{len(values)} values for {len(self.directions)} objectives")
        except (TypeError, ValueError) as err:
            _tell(study, trial, state=TrialState.FAIL)
            failure = ValueError(f"the job returned {ret.return_value!r}, not a number per objective ({err})")
            log.warning("Trial %d failed: %s", trial.number, failure)
            return failure
        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)  # the job's attrs
        pruned = stored.user_attrs.get(PRUNED_EPOCH)
        if pruned is not None:
            _tell(study, trial, state=TrialState.PRUNED)
            log.info("Trial %d: pruned at epoch %s", trial.number, pruned)
        else:
            _tell(study, trial, values=values)
        return None

    def _results(self, study, sweep_dir: Path, finished: int, first_failure: Exception | None) -> Any:
        """optimization_results.yaml in the sweep folder: the best trial of the whole study."""
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if first_failure is not None:
                first = f"{type(first_failure).__name__}: {first_failure}"
                raise NoTrialFinished(f"Study {study.study_name}: no trial finished; the first failed with {first}")
            log.warning("Study %s: every trial so far was pruned; no best trial yet", study.study_name)
            results = {"name": "optuna", "best_params": None, "best_value": None}
        elif len(self.directions) == 1:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("Best trial %d: %s, %s", best.number, best.value, best.params)
        else:
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values}
                                                       for t in study.best_trials]}
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        return results

    def _mean_over_seeds(self, trial, returns: list[JobReturn]) -> JobReturn:
        """The trial's return: the mean of its seeds' returns, or its first failed job."""
        failed = next((r for r in returns if r.status != JobStatus.COMPLETED), None)
        if failed is not None:
            return failed
        not_a_number = next((r for r in returns if not isinstance(r.return_value, numbers.Real)), None)
        if not_a_number is not None:  # _tell fails the trial, saying so
            return not_a_number
        values = {seed: float(r.return_value) for seed, r in zip(self.seeds, returns, strict=True)}
        trial.set_user_attr(BY_SEED, {str(seed): value for seed, value in values.items()})
        mean = copy.copy(returns[0])
        mean.return_value = statistics.fmean(values.values())
        log.info("Trial %d: %.6f, the mean of seeds %s", trial.number, mean.return_value,
                 ", ".join(f"{seed}: {value:.6f}" for seed, value in values.items()))
        return mean

    def _register_launch(self) -> int:
        """Create the study if new (upgrading an older Optuna's database first) and count this
        launch; return the number of launches before it."""
        import optuna
        from filelock import FileLock
        from optuna.exceptions import StorageInternalError
        from sqlalchemy.exc import SQLAlchemyError

        database = sqlite_file(self.storage)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{database}.lock") if database is not None else None
        if lock is not None:
            lock.acquire()
        try:
            storage = open_storage(self.storage)
            study = optuna.create_study(study_name=self.study_name, storage=storage, directions=self.directions,
                                        load_if_exists=True)
            launches = int(study.user_attrs.get(LAUNCHES, 0))
            study.set_user_attr(LAUNCHES, launches + 1)
        except (SQLAlchemyError, StorageInternalError) as err:  # what check_storage could not foresee
            first = str(err.__cause__ or err).splitlines()[0]
            raise SettingRefused(f"hydra.sweeper.storage={self.storage}: {first}") from None
        finally:
            if lock is not None:
                lock.release()
        return launches


def open_storage(url: str):
    """The RDB storage at ``url``; a database an older Optuna wrote (2.x's schema) is upgraded in
    place, as ``optuna storage upgrade --storage URL`` does, and the upgrade logged."""
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(url)
    except RuntimeError as err:  # "The runtime optuna version ... is no longer compatible with the table schema"
        if "optuna storage upgrade" not in str(err):
            raise
    storage = RDBStorage(url, skip_compatibility_check=True)
    before = storage.get_current_version()
    try:
        storage.upgrade()
    except Exception as err:  # noqa: BLE001 - any failure of the migration is the same refusal
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SettingRefused(f"hydra.sweeper.storage={url}: its schema ({before}) is an older Optuna's and could "
                             f"not be upgraded ({first}); run: optuna storage upgrade --storage {url}") from None
    log.warning("Study database %s: upgraded its schema from %s to %s (optuna storage upgrade)", url, before,
                storage.get_current_version())
    storage.engine.dispose()
    return RDBStorage(url)
