"""Run records read as untrusted data: ``summary.json``, ``failed.json`` and ``.hydra/overrides.yaml``.

A run folder may come from anyone (a colleague's archive, a download), so what it says is parsed
by one strict reader per file: bounded size, the JSON or YAML shape checked, every number finite,
of its type and in its range. A record that fails raises ``RecordError`` with one line; callers
that look for runs skip it with a warning. Nothing read here is ever executed or instantiated.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

MAX_RECORD_BYTES = 1_000_000
MAX_OVERRIDES = 500
MAX_OVERRIDE_CHARS = 2_000
NAME = re.compile(r"^[\w.-]{1,100}$")  # a net's name: a config file's stem


class RecordError(ValueError):
    """A run record that is missing, too large, or not what its writer writes."""


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise RecordError(f"{path}: not a file")
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"{path}: {size:,} bytes, more than a run record holds ({MAX_RECORD_BYTES:,})")
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise RecordError(f"{path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason})") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: JSON nested thousands deep
        raise RecordError(f"{path}: not valid JSON ({type(err).__name__})") from None
    if not isinstance(document, dict):
        raise RecordError(f"{path}: a JSON object expected, got {type(document).__name__}")
    return document


def _number(path: Path, document: dict, key: str, low: float, high: float, *, whole: bool,
            optional: bool = True) -> int | float | None:
    value = document.get(key)
    if value is None and optional:
        return None
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise RecordError(f"{path}: {key} is {type(value).__name__}, not a {'whole ' if whole else ''}number")
    if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
        raise RecordError(f"{path}: {key}={value!r} is outside [{low}, {high}]")
    return value


def _text(path: Path, document: dict, key: str, *, pattern: re.Pattern | None = None, limit: int = 4096) -> str:
    value = document.get(key)
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise RecordError(f"{path}: {key} is not a string of at most {limit} characters")
    if pattern is not None and not pattern.match(value):
        raise RecordError(f"{path}: {key}={value[:60]!r} is not a net's name")
    return value


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A finished run's ``summary.json``, checked: the fields ``train.py`` writes, with their types.

    ``val_acc_best`` may be NaN or null (a run whose validation never gave a number): callers
    list such runs without ranking them. Any other value out of its range is a ``RecordError``.
    """
    path = Path(path)
    document = _read_json_object(path)
    val = document.get("val_acc_best")
    if isinstance(val, float) and math.isnan(val):
        val = None
    else:
        val = _number(path, document, "val_acc_best", 0.0, 1.0, whole=False)
    return {
        "model": _text(path, document, "model", pattern=NAME),
        "best_checkpoint": _text(path, document, "best_checkpoint"),
        "val_acc_best": val,
        "test_acc": _number(path, document, "test_acc", 0.0, 1.0, whole=False),
        "params": _number(path, document, "params", 0, 10**12, whole=True) or 0,
        "epochs": _number(path, document, "epochs", 0, 10**7, whole=True) or 0,
        "global_steps": _number(path, document, "global_steps", 0, 10**12, whole=True),
        "seed": _number(path, document, "seed", 0, 2**32 - 1, whole=True),
        "wall_time_s": _number(path, document, "wall_time_s", 0.0, 10**9, whole=False),
        # a trial its study's pruner stopped (cnn_lightning/pruning.py): the epoch it stopped after
        "pruned_epoch": _number(path, document, "pruned_epoch", 0, 10**7, whole=True),
    }


def read_failed(path: str | os.PathLike) -> dict[str, Any]:
    """A failed job's ``failed.json`` (written by the sweep callback): model, error and seed."""
    path = Path(path)
    document = _read_json_object(path)
    error = document.get("error", "unknown error")
    return {
        "model": _text(path, document, "model", pattern=NAME) if "model" in document else "?",
        "error": " ".join(str(error).split())[:500] if isinstance(error, str) else "unknown error",
        "seed": _number(path, document, "seed", 0, 2**32 - 1, whole=True),
    }


def read_overrides(path: str | os.PathLike) -> list[str]:
    """A run's ``.hydra/overrides.yaml``: a YAML list of at most ``MAX_OVERRIDES`` strings."""
    path = Path(path)
    text = _read_text(path)
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as err:
        raise RecordError(f"{path}: not valid YAML ({type(err).__name__})") from None
    if document is None:
        return []
    if not isinstance(document, list) or len(document) > MAX_OVERRIDES:
        raise RecordError(f"{path}: a list of at most {MAX_OVERRIDES} overrides expected")
    for item in document:
        if not isinstance(item, str) or not item or len(item) > MAX_OVERRIDE_CHARS or "\n" in item or "\x00" in item:
            raise RecordError(f"{path}: every override must be one line of text, not {str(item)[:60]!r}")
    return document
