"""Checks made before anything is written, and what a run folder may replay.

Every single-run command (train, evaluate, export) composes its config here the way Hydra's main
will, and runs the project's checks on it before Hydra makes its run folder, ``.hydra/`` or log:
a refused command leaves the file system as it found it. ``resume=`` replays a run folder's saved
overrides only after ``check_replayed_overrides`` has refused anything that could name code or a
place on disk. The small entry points' own checks (evaluate, export, predict) live here too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cnn_lightning.config import (
    TEST_IMAGES,
    ConfigError,
    check_data_dir,
    check_model_node,
    check_number,
    project_root,
    register,
)


def config_groups() -> dict[str, set[str]]:
    """Every config group of ``conf/`` (``model``, ``callbacks``, ...) and its options' names."""
    conf = Path(project_root()) / "conf"
    return {group.name: {p.stem for p in group.glob("*.yaml")} for group in conf.iterdir()
            if group.is_dir() and group.name != "hydra"}


def check_writable_dir(key: str, directory: str | os.PathLike) -> None:
    """A ConfigError unless ``directory`` exists as a folder this process can write, or can be made."""
    path = Path(directory).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise ConfigError(f"{key}={path}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {existing} cannot be written")


def _strings_and_keys(value: Any):
    """Every string and every mapping key inside a parsed override value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key), True
            yield from _strings_and_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_and_keys(item)
    elif isinstance(value, str):
        yield value, False


# Keys that name a place on disk (paths.data_dir, callbacks.model_checkpoint.dirpath, ...).
PLACE_KEY = re.compile(r"(dir|dirpath|path|root|file|filename|save_dir)$")


def check_replayed_overrides(overrides: list[str], source: str) -> None:
    """A run folder's saved overrides (``resume=``) are settings, never code: a ConfigError for any
    that sets Hydra's own config, a key naming code (``_target_``, ``_partial_`` ...), an
    interpolation (``${...}`` can decode text into config), a sweep, a group option that is not a
    file of ``conf/``, a key added outside ``model`` (the one open part of the schema), or a place
    to read or write (``paths.*``, ``...dirpath``: a run folder could aim checkpoints anywhere)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    groups = config_groups()
    parser = OverridesParser.create()
    for text in overrides:
        shown = text.encode("unicode_escape").decode()[:120]

        def refuse(why: str, shown: str = shown) -> None:
            raise ConfigError(f"{source}: refused to replay {shown}: {why}")

        try:
            (override,) = parser.parse_overrides([text])
        except (HydraException, ValueError) as err:
            refuse(f"not an override ({str(err).splitlines()[0][:80]})")
        key = override.key_or_group
        parts = [p for p in re.split(r"[./@]", f"{key}.{override.package or ''}") if p]
        if parts and parts[0] in ("hydra", "resume"):
            refuse("a run folder does not set Hydra's own config")
        if any(p.startswith("_") for p in parts):
            refuse("it sets a key that names code (_target_ and the like)")
        if parts and PLACE_KEY.search(parts[-1]):
            refuse("a run folder does not say where to read or write; give it beside resume= if you mean it")
        if override.is_sweep_override():
            refuse("a sweep, not one value")
        value = None if override.is_delete() else override.value()
        for item, is_key in _strings_and_keys(value):
            if is_key and item.startswith("_"):
                refuse("its value holds a key that names code (_target_ and the like)")
            if "${" in item:
                refuse("an interpolation")
        group = key.split("/")[0]
        if group in groups:
            if value is not None and (not isinstance(value, str) or value not in groups[group]):
                refuse(f"not one of conf/{group}/ ({', '.join(sorted(groups[group]))})")
        elif (override.is_add() or override.is_force_add()) and not key.startswith("model."):
            refuse("it adds a key outside the config schema")


def compose_run(config_name: str, overrides: list[str]) -> DictConfig | None:
    """The config a single run of ``config_name`` with ``overrides`` gets, composed as Hydra's
    main will compose it (its ``hydra`` node included), with ``paths.output_dir`` set to the run
    folder it would make. A ConfigError in one line for what Hydra or OmegaConf refuse (a wrong
    type, an unknown key or option); None for anything else, which Hydra's main then reports."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    try:
        with initialize_config_dir(config_dir=str(Path(project_root()) / "conf"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        if config_name == "train":  # the run folder's name holds model.name
            check_model_node(cfg)
        run_dir = str(cfg.hydra.run.dir)
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException) as err:
        if _multirun_by_config(config_name, overrides):  # hparams_search=...: hydra.mode MULTIRUN
            return None  # its jobs are checked in their own folders, like -m's
        raise ConfigError(hydra_error_line(err)) from None
    except Exception:  # noqa: BLE001 - Hydra's main composes again and reports it its own way
        return None
    if "paths" in cfg and "output_dir" in cfg.paths:  # else ${hydra:runtime.output_dir}, unset here
        cfg.paths.output_dir = run_dir
    return cfg


def _multirun_by_config(config_name: str, overrides: list[str]) -> bool:
    """Whether the command has sweep overrides (``model.net.c2=choice(64)``) and, composed without
    them, sets ``hydra.mode: MULTIRUN`` itself (an ``hparams_search`` config): a multirun without
    ``-m``, which a single run's composition refuses."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        plain = [o.input_line for o in parsed if not o.is_sweep_override()]
        if len(plain) == len(parsed):
            return False
        with initialize_config_dir(config_dir=str(Path(project_root()) / "conf"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=plain, return_hydra_config=True)
        return cfg.hydra.mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - then the first composition's error stands
        return False


# Hydra options after which no run is made (help, config printing, shell completion), and
# multirun: a sweep's jobs are checked in their own folders, which its leaderboard lists as failed.
NO_RUN_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion",
                "-m", "--multirun", "-p", "--package", "--resolve", "--version")


def check_before_writing(config_name: str, argv: list[str], check) -> None:
    """Every check of a single run (``check(cfg)``, and that its run folder can be made), before
    Hydra writes that folder, ``.hydra/`` or a log: a refused command leaves the file system as
    it found it."""
    if any(a.split("=", 1)[0] in NO_RUN_FLAGS for a in argv):
        return
    cfg = compose_run(config_name, [a for a in argv if not a.startswith("-")])
    if cfg is None:  # Hydra's own message, from its main
        return
    if OmegaConf.select(cfg, "hydra.output_subdir") is not None:  # the command writes .hydra/ there
        check_writable_dir("hydra.run.dir", cfg.hydra.run.dir)
    with open_dict(cfg):
        del cfg["hydra"]
    check(cfg)


def hydra_error_line(err: BaseException) -> str:
    """Hydra's or OmegaConf's message in one line: its first line, and what the cause says (the
    key and the value's problem), without the advice to set HYDRA_FULL_ERROR."""
    def first(e: BaseException) -> str:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
        return lines[0] if lines else type(e).__name__

    text, cause = first(err), err.__cause__
    lines = str(err).splitlines()
    at = next((i for i, ln in enumerate(lines) if ln.startswith("Available options in")), None)
    if at is not None:  # a group option that does not exist: name the ones that do
        options = []
        for ln in lines[at + 1:]:
            if not ln.startswith(("\t", " ")) or not ln.strip():
                break  # the list ends where Hydra's search path begins
            options.append(ln.strip())
        text += f"; {lines[at].strip().rstrip(':').lower()}: {', '.join(options)}"
    key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
    if cause is not None and first(cause) not in text:
        text += f": {first(cause)}"
    if key and key not in text:
        text += f" (key {key})"
    return text


def check_evaluate_config(cfg: DictConfig) -> None:
    """The evaluation config's values, before any data is read or checkpoint loaded."""
    from cnn_lightning.checkpoints import CheckpointError, load_model

    check_number(cfg, "data.eval_batch_size", 1, TEST_IMAGES, whole=True, what="at most the 10,000 test images")
    check_data_dir(cfg)
    check_number(cfg, "ensemble_per_model", 1, 1000, whole=True)
    check_number(cfg, "ensemble_seed", 0, None, whole=True)
    check_number(cfg, "worst", 0, TEST_IMAGES, whole=True, what="misclassified digits shown")
    device = str(cfg.device)
    if device.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r}: must be auto, cpu, cuda[:N] or mps")
    if device.startswith("cuda") and not torch_available("cuda"):
        raise ConfigError(f"device={device!r}: no CUDA device here (use device=auto or cpu)")
    if device == "mps" and not torch_available("mps"):
        raise ConfigError("device='mps': no MPS device here (use device=auto or cpu)")
    models = _check_arch(cfg)
    chosen = cfg.get("ensemble_models")
    if isinstance(chosen, str) or (chosen is not None and not OmegaConf.is_list(chosen)):
        raise ConfigError(f"ensemble_models={chosen!r}: must be a list of nets, e.g. [tiny,lenet]")
    unknown = sorted({str(m) for m in chosen or []} - set(models))
    if unknown:
        raise ConfigError(f"ensemble_models: {unknown} not among {models}")
    if cfg.ckpt != "best":
        try:
            load_model(cfg.ckpt)
        except CheckpointError as err:
            raise ConfigError(f"ckpt={cfg.ckpt}: {err}") from None
    if cfg.ckpt == "best" or cfg.ensemble:
        if not Path(str(cfg.outputs_root)).is_dir():
            raise ConfigError(f"outputs_root={cfg.outputs_root}: no such directory; train first: make train")
        from cnn_lightning.evaluate import choose_members

        choose_members(cfg)  # the runs it would use exist (a CheckpointError or ConfigError if not)


def _check_arch(cfg: DictConfig) -> list[str]:
    """``arch`` is a net of conf/model/, or null; returns those nets."""
    models = sorted(config_groups()["model"])
    if cfg.arch is not None and str(cfg.arch) not in models:
        raise ConfigError(f"arch={cfg.arch!r}: must be one of {models}")
    return models


def check_predict_config(cfg: DictConfig) -> None:
    """predict's options (the checkpoint is checked when it is loaded)."""
    check_number(cfg, "batch_size", 1, 10_000, whole=True, what="images per forward pass")
    _check_arch(cfg)


def check_export_config(cfg: DictConfig) -> None:
    """export's options, before the checkpoint is loaded or the test set read."""
    from cnn_lightning.export import FORMATS

    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not one of {', '.join(FORMATS)}")
    check_number(cfg, "tolerance", 0, 1e6, what="the largest logit difference allowed; 0: exact")
    _check_arch(cfg)


def torch_available(kind: str) -> bool:
    import torch

    return torch.cuda.is_available() if kind == "cuda" else torch.backends.mps.is_available()
