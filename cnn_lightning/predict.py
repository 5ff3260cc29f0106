"""Read the digit in image files with a trained net.

    python -m cnn_lightning.predict scan.png photo.jpg              # with the best run found
    python -m cnn_lightning.predict digits/ ckpt=path/to/x.ckpt     # every image in a folder
    python -m cnn_lightning.predict digits/ arch=lenet --json       # for machines

Any image Pillow reads, of any size, colour or grey, dark ink on light paper or light on dark,
gets the app's MNIST-style preprocessing (crop to the ink, fit 20x20, centre of mass on 28x28).
One line per file: the file, the digit and its probability, and the runner-up when the net is
unsure. A file that cannot be read or has no ink gets one line saying why (on stderr), the others
still run, and the command then exits with status 1. Overrides (``key=value``) are those of
``conf/predict.yaml``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cnn_lightning.checkpoints import CheckpointError, choose_checkpoint, load_model, read_checkpoint
from cnn_lightning.config import ConfigError, project_root, register
from cnn_lightning.images import (
    EmptyImageError,
    ImageFileError,
    image_suffixes,
    load_image_file,
    preprocess,
    shown,
)
from cnn_lightning.inference import UNSURE_BELOW
from cnn_lightning.prechecks import check_predict_config, hydra_error_line

OVERRIDE = re.compile(r"^[~+]{0,2}[A-Za-z_][\w.]*=")


@dataclass(frozen=True)
class Result:
    """One file: its probabilities, or why it could not be read."""

    file: str
    probabilities: np.ndarray | None = None  # (10,)
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        order = np.argsort(self.probabilities)[::-1]
        return {
            "file": self.file,
            "digit": int(order[0]),
            "confidence": round(float(self.probabilities[order[0]]), 6),
            "unsure": bool(self.probabilities[order[0]] < UNSURE_BELOW),
            "runner_up": {"digit": int(order[1]), "probability": round(float(self.probabilities[order[1]]), 6)},
            "probabilities": [round(float(p), 6) for p in self.probabilities],
        }

    def line(self) -> str:
        if self.error is not None:
            return self.error
        result = self.to_json()
        text = f"{self.file}: {result['digit']} ({result['confidence']:.1%})"
        if result["unsure"]:
            text += f", unsure: or {result['runner_up']['digit']} ({result['runner_up']['probability']:.1%})"
        return text


def image_files(paths: list[str]) -> list[tuple[str, Path | None, str | None]]:
    """(name shown, file, None) for every file given and every image inside a folder given, in
    order; (name, None, why) for a folder without images."""
    suffixes = image_suffixes()
    found = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            try:
                inside = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
            except OSError as err:
                found.append((shown(given), None, f"{shown(given)}: cannot list this folder ({err.strerror or err})"))
                continue
            found += [(shown(p), p, None) for p in inside]
            if not inside:
                found.append((shown(given), None, f"{shown(given)}: no image files in this folder"))
        else:  # a missing or unreadable file is reported by load_image_file, in its place
            found.append((shown(given), path, None))
    return found


@torch.no_grad()
def predict(model: torch.nn.Module, paths: list[str], batch_size: int = 256) -> list[Result]:
    """A result per image file (folders expanded), in order; failures become results with ``error``."""
    results: list[Result] = []
    pending: list[tuple[int, torch.Tensor]] = []  # (index in results, preprocessed image)
    for name, path, problem in image_files(paths):
        if problem is not None:
            results.append(Result(name, error=problem))
            continue
        try:
            pending.append((len(results), preprocess(load_image_file(path))))
            results.append(Result(name))
        except ImageFileError as err:
            results.append(Result(name, error=str(err)))
        except EmptyImageError:
            results.append(Result(name, error=f"{name}: no ink found, nothing to read (a blank image?)"))
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        probabilities = model(torch.stack([x for _, x in chunk])).double().softmax(1).numpy()
        for (index, _), p in zip(chunk, probabilities, strict=True):
            results[index] = Result(results[index].file, probabilities=p)
    return results


def compose_config(overrides: list[str]) -> DictConfig:
    register()
    with initialize_config_dir(config_dir=str(Path(project_root()) / "conf"), version_base="1.3"):
        return compose(config_name="predict", overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnn_lightning.predict", description=__doc__.split("\n\n")[0],
        epilog="key=value arguments override conf/predict.yaml: ckpt=<file>|best, arch=<model name>",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|DIR|key=value")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    # An argument that names an existing file is an image even if its name has an "=" in it.
    overrides = [a for a in args.inputs if OVERRIDE.match(a) and not Path(a).exists()]
    paths = [a for a in args.inputs if a not in overrides]
    if not paths:
        parser.error("no image files or folders given")
    try:
        cfg = compose_config(overrides)
        check_predict_config(cfg)
        checkpoint = choose_checkpoint(cfg.ckpt, cfg.arch, cfg.outputs_root)
        model = load_model(checkpoint)
        model_name = read_checkpoint(checkpoint)["hyper_parameters"].get("name")
    except (HydraException, OmegaConfBaseException) as err:
        raise SystemExit(f"cannot predict: {hydra_error_line(err)}") from None
    except ConfigError as err:
        raise SystemExit(f"cannot predict: {err}") from None
    except CheckpointError as err:
        raise SystemExit(f"cannot predict: {err}") from None

    results = predict(model, paths, cfg.batch_size)
    if args.json:
        document = {"checkpoint": str(checkpoint), "model": model_name, "predictions": [r.to_json() for r in results]}
        print(json.dumps(document, indent=2))
    else:
        print(f"{model_name}: {checkpoint}", file=sys.stderr)
        for result in results:
            print(result.line(), file=sys.stderr if result.error else sys.stdout)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
