"""Pruning of Optuna trials: a job of a study search with ``hydra.sweeper.pruner`` reports its
``val/acc`` to its trial after every validation, and stops at the end of the epoch where the
study's pruner says so.

The project's own callback rather than optuna-integration's ``PyTorchLightningPruningCallback``:
that one (given the objective's Trial, which a Hydra job has not) raises ``optuna.TrialPruned`` out of
``trainer.fit`` in a single process, so the run would end as an error,
with no summary and no test of its best checkpoint; here the trainer stops as after its last epoch
(``trainer.should_stop``), the run is saved, summarised and marked pruned, and the sweeper tells
the study PRUNED (the trial's user attribute ``pruned_epoch`` says so). Only global rank 0 reports;
it broadcasts the decision, so that under DDP every rank stops at the same epoch.
"""

from __future__ import annotations

import logging
import os

import lightning as L
from omegaconf import DictConfig

log = logging.getLogger(__name__)

TRIAL_NUMBER = "OPTUNA_TRIAL_NUMBER"  # set by the study sweeper (hydra.job.env_set)
PRUNED_EPOCH = "pruned_epoch"  # the trial's user attribute, and the run summary's key
MONITOR = "val/acc"


class TrialPruning(L.Callback):
    """Reports ``val/acc`` to trial ``number`` of study ``study_name`` in ``storage`` after every
    validation (step: the epoch) and stops training when the study's pruner prunes it."""

    def __init__(self, storage: str, study_name: str, number: int, pruner) -> None:
        self.storage, self.study_name, self.number, self.pruner = storage, study_name, number, pruner
        self.trial = None
        self.pruned_epoch: int | None = None

    def _open(self):
        import optuna

        storage = optuna.storages.get_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), self.number)
        return optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        epoch, value, prune = trainer.current_epoch, trainer.callback_metrics.get(MONITOR), False
        if trainer.is_global_zero and value is not None:
            if self.trial is None:
                self.trial = self._open()
            self.trial.report(float(value), step=epoch)
            prune = self.trial.should_prune()
        # every rank stops at the same epoch (under DDP a rank left training alone would wait forever)
        if not trainer.strategy.broadcast(prune, src=0):
            return
        self.pruned_epoch = epoch
        trainer.should_stop = True
        if trainer.is_global_zero:
            self.trial.set_user_attr(PRUNED_EPOCH, epoch)
            log.info("Trial %d pruned at epoch %d (val/acc %.4f): training stops after this epoch",
                     self.number, epoch, float(value))


def trial_pruning(cfg: DictConfig) -> TrialPruning | None:
    """The pruning callback of a job of a study search whose sweeper has a pruner, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    number = os.environ.get(TRIAL_NUMBER)
    if number is None or not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    if sweeper.get("pruner") is None or sweeper.get("storage") is None:
        return None
    return TrialPruning(str(sweeper.storage), str(sweeper.study_name), int(number), instantiate(sweeper.pruner))
