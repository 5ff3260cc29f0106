"""The words the app shows: empty and error states, and library errors cut to their point."""

from __future__ import annotations

from pathlib import Path

TRAIN_COMMANDS = ("make train", "python -m cnn_lightning.train model=tiny")


def no_model_text(outputs_root: Path) -> str:
    return (
        "<b>No trained model found</b><br><br>"
        f"Looked for runs in<br><code>{outputs_root}</code><br><br>"
        f"Train one with<br><code>{TRAIN_COMMANDS[0]}</code><br>or<br><code>{TRAIN_COMMANDS[1]}</code>"
        "<br><br>then press <b>Refresh</b>. You can draw meanwhile: the 28 × 28 input still updates."
    )


def still_using_text(name: str, message: str, fallback: str) -> str:
    return f"Could not load {name}: {brief(message)}\nStill using {fallback}."


def checkpoint_gone_text(path: str) -> str:
    return (f"The checkpoint file {path} was deleted or moved. The model stays loaded and keeps "
            "working; press Refresh to list the checkpoints that remain.")


def load_error_text(name: str, message: str) -> str:
    return (
        f"<b>Could not load {name}</b><br><br>{escape(brief(message))}<br><br>"
        f"Choose another model, or train a new one with <code>{TRAIN_COMMANDS[0]}</code>."
    )


def brief(message: str, limit: int = 260) -> str:
    """An error without the paragraphs of advice torch appends to its own: the first line, up to
    a long parenthesis (the quoted library error), at most ``limit`` characters."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()] or [message]
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict:" then the error
        first = f"{first} {lines[1]}"
    start = first.find(" (")
    if start > 0:
        end = first.find(")", start)
        if (end if end > 0 else len(first)) - start > 80:
            first = first[:start]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
