"""Train a net: ``python -m cnn_lightning.train model=tiny [key=value ...]``.

Resume an interrupted run in its own directory: ``python -m cnn_lightning.train resume=<run dir>``.

Composes the data module, model, callbacks, logger and trainer from ``conf/``, fits, tests the
best checkpoint (chosen on the validation split) on the official test set, writes the run's
``summary.json`` and returns the best validation accuracy, which a Hydra sweep optimises.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from cnn_lightning.checkpoints import CheckpointError
from cnn_lightning.config import (
    ConfigError,
    check_model_chosen,
    check_train_config,
    distill_settings,
    override_key,
    project_root,
    register,
    to_plain,
)
from cnn_lightning.console import EpochLine, quiet_libraries
from cnn_lightning.images import shown
from cnn_lightning.mnist_files import MNISTUnavailableError
from cnn_lightning.prechecks import check_before_writing, check_replayed_overrides
from cnn_lightning.pruning import PRUNED_EPOCH, trial_pruning
from cnn_lightning.records import RecordError, read_overrides, read_summary
from cnn_lightning.saving import AtomicCheckpointIO, InterruptCheckpoint, Interrupted, StopSignals
from cnn_lightning.summary import format_table, layer_table
from cnn_lightning.sweep import write_atomically

log = logging.getLogger(__name__)
register()
quiet_libraries()


def _fit_state_from_checkpoints(best_path: str, last_path: str) -> tuple:
    """(best score, epochs trained, global steps) as the checkpoint files record them."""
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    score = next(
        (s["best_model_score"] for k, s in best.get("callbacks", {}).items() if k.startswith("ModelCheckpoint")),
        None,
    )
    last_path = last_path or str(Path(best_path).with_name("last.ckpt"))
    last = torch.load(last_path, map_location="cpu", weights_only=True) if Path(last_path).is_file() else best
    return score, last["epoch"] + 1, last["global_step"]


def _test_best(trainer: L.Trainer, model: L.LightningModule, datamodule, best_path: str) -> float:
    """The test accuracy of the weights the best checkpoint's state_dict holds.

    With weight averaging (``callbacks.ema``) those are the averaged weights, which validation
    chose; the callback's on_load_checkpoint would put the raw ones it keeps beside them
    (``current_model_state``) back, so it sits the test out.
    """
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
    with warnings.catch_warnings():  # "callbacks used to create the checkpoint ...": left out on purpose
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
        (results,) = trainer.test(model, datamodule=datamodule, ckpt_path=best_path, weights_only=True)
    return results["test/acc"]


def train(cfg: DictConfig, stop_signals: StopSignals | None = None) -> dict:
    stop_signals = stop_signals or StopSignals()  # entered by main(); a bare one stands aside for nothing
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    distill = distill_settings(cfg)  # teacher=best: the best finished run's checkpoint, now
    model = instantiate(cfg.model, _recursive_=False, **({"distill": distill} if distill else {}))
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    pruning = trial_pruning(cfg)  # a job of a study search with a pruner
    callbacks += [pruning] if pruning else []
    logger = instantiate(cfg.logger) if cfg.logger else False
    if not logger:  # ~logger: nothing to record the learning rate in (Lightning would refuse to start)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    no_bar = {}
    if any(isinstance(c, EpochLine) and c.active() for c in callbacks):  # a file or pipe: a line per epoch
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        no_bar = {"enable_progress_bar": False}
    saver = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)
    interrupt = InterruptCheckpoint(saver.dirpath) if saver else None
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks + ([interrupt] if interrupt else []), logger=logger,
        plugins=[AtomicCheckpointIO()],  # a full disk or a kill never leaves a truncated checkpoint
        **no_bar,
    )
    if trainer.is_global_zero:  # the seeds' conv arithmetic, layer by layer
        log.info("%s: %s\n%s", cfg.model.name, cfg.model.net._target_, format_table(layer_table(model.model.net)))
        if distill:
            log.info("Distilling from %s (temperature %s, weight %s)", ", ".join(distill["teacher"]),
                     distill["temperature"], distill["weight"])

    try:
        with stop_signals.fitting():
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    except SIGTERMException:  # Lightning stopped at a batch end; InterruptCheckpoint saved it
        where = f"saved {interrupt.path}; resume with: python -m cnn_lightning.train resume={cfg.paths.output_dir}"
        raise Interrupted(f"training stopped by {getattr(interrupt, 'signal_name', None) or 'SIGTERM'} at "
                          f"epoch {trainer.current_epoch}, step {trainer.global_step}; {where}") from None

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    epochs, steps = trainer.current_epoch, trainer.global_step
    if best_path and best_score is None:
        # ddp_spawn trained in worker processes, which hand back only the best path: read the
        # score from that checkpoint, and epochs and steps from the last one.
        best_score, epochs, steps = _fit_state_from_checkpoints(best_path, checkpoint.last_model_path)
    summary = {
        "model": cfg.model.name,
        "params": sum(p.numel() for p in model.model.parameters() if p.requires_grad),
        "best_checkpoint": best_path,
        "val_acc_best": float(best_score) if best_score is not None else None,
        "test_acc": None,
        "epochs": epochs,
        "global_steps": steps,
        "seed": cfg.seed,
        "wall_time_s": None,
        "output_dir": str(cfg.paths.output_dir),
        "tensorboard_dir": getattr(trainer.logger, "log_dir", None) if trainer.logger else None,
    }
    if pruning and pruning.pruned_epoch is not None:
        summary[PRUNED_EPOCH] = pruning.pruned_epoch
    if cfg.test and best_path:
        summary["test_acc"] = _test_best(trainer, model, datamodule, best_path)
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    if trainer.is_global_zero:
        write_atomically(Path(cfg.paths.output_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
        test = f"{summary['test_acc']:.2%}" if summary["test_acc"] is not None else "not run"
        log.info(
            "\nTest accuracy of the best checkpoint (val acc %s): %s\nCheckpoint:  %s\n"
            "TensorBoard: tensorboard --logdir %s\nSummary:     %s",
            f"{summary['val_acc_best']:.2%}" if summary["val_acc_best"] is not None else "n/a",
            test, best_path, summary["tensorboard_dir"],
            Path(cfg.paths.output_dir) / "summary.json",
        )
    return summary


# What a user did wrong (or asked for): one line and a non-zero exit, never a traceback.
USER_ERRORS = (ConfigError, CheckpointError, MNISTUnavailableError, Interrupted, FloatingPointError)


def null_groups_to_deletions(argv: list[str]) -> list[str]:
    """``logger=null`` (or ``none``) means "no logger": Hydra spells that ``~logger`` and meets the
    first with a traceback. Only config groups (folders of ``conf/``) are rewritten."""
    groups = {p.name for p in (Path(project_root()) / "conf").iterdir() if p.is_dir()}
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        out.append(f"~{key}" if key in groups and value.lower() in ("null", "none") else arg)
    return out


def hydra_quoted(value: str | os.PathLike) -> str:
    """``value`` as one quoted value of Hydra's override grammar: a path with spaces, quotes,
    commas or brackets stays one path."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))
    trailing = len(escaped) - len(escaped.rstrip("\\"))  # backslashes before the closing quote
    return "'" + escaped + "\\" * trailing + "'"


def expand_resume(argv: list[str]) -> tuple[list[str], Path | None]:
    """Turn ``resume=<run dir>`` into that run's own overrides, directory and ``last.ckpt``; also
    return the run directory (None without ``resume=``).

    The run's saved overrides are read as untrusted data: ``check_replayed_overrides`` refuses any
    that could name code. Overrides given beside ``resume=`` win over the run's
    (``trainer.max_epochs=30`` extends it). A ConfigError says what is wrong.
    """
    resume = [a for a in argv if a.startswith("resume=")]
    if not resume:
        return argv, None
    run_dir = Path(resume[-1].split("=", 1)[1]).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    last = run_dir / "checkpoints" / "last.ckpt"
    if not saved.is_file() or not last.is_file():
        raise ConfigError(f"resume={shown(run_dir)}: not a resumable run directory "
                          f"(needs {saved.name} in .hydra/ and {shown(last)})")
    try:
        previous = read_overrides(saved)
    except RecordError as err:
        raise ConfigError(f"resume={shown(run_dir)}: {err}") from None
    given = [a for a in argv if not a.startswith("resume=")]
    replaced = {override_key(a) for a in given} | {"ckpt_path"}
    previous = [o for o in previous if override_key(o) not in replaced]  # what the command line says wins
    check_replayed_overrides(previous, f"resume={shown(run_dir)}: {saved.name}")
    return [*previous, *given, f"hydra.run.dir={hydra_quoted(run_dir)}", f"ckpt_path={hydra_quoted(last)}"], run_dir


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """What resuming ``run_dir`` with ``cfg`` must not do: load its checkpoint into another net,
    or train a finished run again (which would only re-test it and rewrite its summary)."""
    from cnn_lightning.checkpoints import read_checkpoint

    where = f"resume={shown(run_dir)}"
    saved = read_checkpoint(cfg.ckpt_path)["hyper_parameters"]
    if saved.get("net") != to_plain(cfg.model.net):
        raise ConfigError(f"{where}: its checkpoint holds a {saved.get('name', '?')} net "
                          f"({saved.get('net', {}).get('_target_', '?')}), not the {cfg.model.name} net this "
                          "command asks for; leave model and model.net as the run had them")
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            finished = read_summary(summary)
        except RecordError as err:
            raise ConfigError(f"{where}: {err}") from None
        if cfg.trainer.max_epochs != -1 and finished["epochs"] >= cfg.trainer.max_epochs:
            raise ConfigError(f"{where}: the run finished ({finished['epochs']} of {cfg.trainer.max_epochs} epochs); "
                              "to train it further, add trainer.max_epochs=<more>")


def cli(argv: list[str]) -> list[str]:
    """The command line's arguments as Hydra's main will take them, once checked; a one-line
    SystemExit for anything refused (nothing is written before it)."""
    try:
        argv, resumed = expand_resume(null_groups_to_deletions(argv))
        check_model_chosen(argv)

        def check(cfg: DictConfig) -> None:
            check_train_config(cfg)
            if resumed is not None:
                check_resume(cfg, resumed)

        check_before_writing("train", argv, check)
    except (ConfigError, CheckpointError) as err:
        raise SystemExit("train: " + " ".join(line.strip() for line in str(err).splitlines())) from None
    return argv


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        with StopSignals() as stop_signals:
            check_train_config(cfg)  # before any data is read or model built
            return train(cfg, stop_signals)["val_acc_best"]
    except (*USER_ERRORS, InstantiationException) as caught:
        err = caught.__cause__ if isinstance(caught, InstantiationException) else caught
        if not isinstance(err, USER_ERRORS):  # a stop signal inside instantiate arrives wrapped
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise err from None  # its leaderboard marks this job failed; the sweep goes on, unless interrupted
        raise SystemExit("train: " + " ".join(line.strip() for line in str(err).splitlines())) from None


if __name__ == "__main__":
    sys.argv[1:] = cli(sys.argv[1:])
    main()
