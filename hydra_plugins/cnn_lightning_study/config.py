"""The config of ``hydra/sweeper=optuna_study``, and the samplers under ``hydra/sweeper/sampler``.

The keys are the ones Hydra's Optuna sweeper 1.3 had (``sampler``, ``direction``, ``storage``,
``study_name``, ``n_trials``, ``n_jobs``, ``max_failure_rate``, ``params``), plus ``seeds`` and
``pruner``; the sweeper itself (study.py) is this project's, on Optuna 4/5's ask-and-tell API.

No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module without
registering it in ``sys.modules``, where a dataclass would look its string annotations up.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class StudySweeperConf:
    _target_: str = "hydra_plugins.cnn_lightning_study.study.StudySweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # an instantiable config of an Optuna sampler (hydra/sweeper/sampler=tpe|random|grid|cmaes|gp)
    sampler: Any = None
    direction: Any = "minimize"  # minimize | maximize, or a list of them (several objectives)
    storage: Any = None  # any SQLAlchemy URL; None: in memory
    study_name: Optional[str] = None  # noqa: UP045  (OmegaConf reads the annotation; it knows no `X | None`)
    # Any, not int: a bad value (0, 1.5, many) reaches StudySweeper, which refuses it in one line
    # naming the key; as int, OmegaConf's type error takes five.
    n_trials: Any = 20
    n_jobs: Any = 2
    max_failure_rate: float = 0.0  # the share of failed trials in a batch above which the search stops
    params: Optional[dict[str, Any]] = None  # noqa: UP045  key: value in Hydra's override grammar
    # Each trial trained once per seed, scored by the mean of their returns (None: once, with `seed`).
    seeds: Optional[list[int]] = None  # noqa: UP045
    # an instantiable config of an Optuna pruner (optuna.pruners.MedianPruner, ...); None: no pruning
    pruner: Any = None


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None},
    "gp": {"_target_": "optuna.samplers.GPSampler", "seed": None},  # needs scipy
    # the search space comes from the sweeper's params (choice/range only)
    "grid": {"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": None},
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna_study_base", node=StudySweeperConf, provider="cnn_lightning")
for name, node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="cnn_lightning")
