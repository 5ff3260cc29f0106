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
  returns: one seed's validation accuracy ranks seed noise when the differences are 0.05 points.

Hydra loads sweepers only from the ``hydra_plugins`` package, hence this module's place.
"""

from __future__ import annotations

import copy
import logging
import numbers
import statistics
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


def sqlite_file(storage: Any) -> Path | None:
    """The database file of an SQLite storage URL, else None."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(storage).database
    return Path(database) if database and database != ":memory:" else None


class NoTrialFinished(CompactHydraException):
    """Hydra prints this one as its message alone."""


class SeedsConflict(CompactHydraException):
    """``hydra.sweeper.seeds`` and a ``seed`` override (or search parameter) at once."""


class StudySweeper(OptunaSweeper):
    def __init__(self, *args: Any, seeds: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seeds = [int(s) for s in seeds] if seeds else []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl = self.sweeper
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
        if self.seeds:  # before the study hands out a trial that would never finish
            if len(set(self.seeds)) != len(self.seeds):
                raise SeedsConflict(f"hydra.sweeper.seeds repeats a seed: {self.seeds}")
            # imported here: the package imports torch, and Hydra's plugin scan imports this module at every start
            from cnn_lightning.config import override_key

            keys = [override_key(a) for a in arguments] + list(self.sweeper.params or {})
            if "seed" in keys:
                raise SeedsConflict(f"hydra.sweeper.seeds={self.seeds} gives each trial its seeds; drop the seed override")
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
        finally:
            if lock is not None:
                lock.release()
        return launches
