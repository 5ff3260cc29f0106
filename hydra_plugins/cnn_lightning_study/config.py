"""The config of ``hydra/sweeper=optuna_study``: Hydra's Optuna sweeper's, and ``seeds``.

No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module without
registering it in ``sys.modules``, where a dataclass would look its string annotations up.
"""

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf


@dataclass
class StudySweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.cnn_lightning_study.study.StudySweeper"
    # Any, not int: a bad value (0, 1.5, many) reaches StudySweeper, which refuses it in one line
    # naming the key; as int, OmegaConf's type error takes five.
    n_trials: Any = 20
    n_jobs: Any = 2
    # Each trial trained once per seed, scored by the mean of their returns (None: once, with `seed`).
    seeds: Optional[list[int]] = None  # noqa: UP045  (OmegaConf reads the annotation; it knows no `X | None`)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study_base", node=StudySweeperConf,
                             provider="cnn_lightning")
