"""Evaluate the best checkpoint (or any) on the official test set, alone or as an ensemble.

    python -m cnn_lightning.evaluate                       # the best run found, overall
    python -m cnn_lightning.evaluate arch=lenet            # the best LeNet-5 (`model` is the training config group)
    python -m cnn_lightning.evaluate ckpt=path/to/x.ckpt
    python -m cnn_lightning.evaluate ensemble=true         # best checkpoints of every architecture

Writes ``metrics.json`` (accuracy, per-class accuracy, confusion matrix, members), the confusion
matrix and the most confident mistakes as PNGs, and the same to TensorBoard, into its own run
directory. Checkpoints are chosen by validation accuracy; the test set only reports.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cnn_lightning.callbacks.render import caption_grid, render_confusion, to_hwc
from cnn_lightning.checkpoints import CheckpointError, RunRecord, best_run, find_runs, load_model
from cnn_lightning.config import ConfigError, register
from cnn_lightning.mnist_files import MNISTUnavailableError
from cnn_lightning.prechecks import check_before_writing, check_evaluate_config
from cnn_lightning.sweep import write_atomically

log = logging.getLogger(__name__)
register()


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities (N, 10) for uint8 images (N, 1, 28, 28)."""
    model = model.to(device)
    out = [
        model(chunk.to(device).float().div_(255)).float().softmax(1).cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(out)


def score(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: label, columns: prediction)."""
    classes = probs.shape[1]
    accuracy = MulticlassAccuracy(classes, average="micro")(probs, labels)
    per_class = MulticlassAccuracy(classes, average=None)(probs, labels)
    confusion = MulticlassConfusionMatrix(classes)(probs, labels)
    return {
        "test_acc": float(accuracy),
        "per_class_acc": [round(float(a), 6) for a in per_class],
        "confusion_matrix": confusion.tolist(),
        "errors": int(len(labels) - confusion.trace()),
        "images": len(labels),
    }


def choose_members(cfg: DictConfig) -> list[RunRecord | Path]:
    """The checkpoints to evaluate: one file, the best run, or the ensemble's members."""
    if cfg.ensemble:
        runs = [r for r in find_runs(cfg.outputs_root) if cfg.ensemble_seed is None or r.seed == cfg.ensemble_seed]
        wanted = set(cfg.ensemble_models) if cfg.ensemble_models else {r.model for r in runs}
        members = []
        for model in sorted(wanted):
            members += [r for r in runs if r.model == model][: cfg.ensemble_per_model]  # best val acc first
        missing = sorted(wanted - {m.model for m in members})
        if missing or not members:
            seed = f" of seed {cfg.ensemble_seed}" if cfg.ensemble_seed is not None else ""
            raise ConfigError(f"no finished runs{seed} of {', '.join(missing) or 'any net'} under "
                             f"{cfg.outputs_root}; train first: make train")
        return members
    # the run's record, not only its file, so that metrics.json names the model, seed and val acc
    return [Path(cfg.ckpt)] if cfg.ckpt != "best" else [best_run(cfg.outputs_root, cfg.arch)]


def evaluate(cfg: DictConfig) -> dict:
    members = choose_members(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    device = pick_device(cfg.device)

    probs, described = torch.zeros(len(labels), 10), []
    for member in members:
        path = member.checkpoint if isinstance(member, RunRecord) else member
        member_probs = predict_proba(load_model(path), images, device)
        probs += member_probs / len(members)
        entry = {"checkpoint": str(path), "test_acc": score(member_probs, labels)["test_acc"]}
        if isinstance(member, RunRecord):
            entry |= {"model": member.model, "seed": member.seed, "val_acc": member.val_acc}
        described.append(entry)
        log.info("%s: test accuracy %.2f%%", path, 100 * entry["test_acc"])

    metrics = {"ensemble": bool(cfg.ensemble), "members": described} | score(probs, labels)
    out_dir = Path(cfg.paths.output_dir)
    write_atomically(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    confusion = render_confusion(torch.tensor(metrics["confusion_matrix"]))
    confusion.save(out_dir / "confusion_matrix.png")
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().squeeze(1)
    worst = wrong[confidence[wrong].argsort(descending=True)][: cfg.worst]
    grid = None
    if len(worst):
        lines = [(f"label {int(labels[i])}", f"pred {int(predicted[i])} {float(confidence[i]):.0%}") for i in worst]
        grid = caption_grid(images[worst].float() / 255, lines)
        grid.save(out_dir / "worst_misclassified.png")

    with SummaryWriter(str(out_dir / "tensorboard")) as writer:
        writer.add_scalar("test/acc", metrics["test_acc"], 0)
        for digit, acc in enumerate(metrics["per_class_acc"]):
            writer.add_scalar(f"test/acc_class_{digit}", acc, 0)
        writer.add_image("test/confusion_matrix", torch.from_numpy(to_hwc(confusion).copy()), 0, dataformats="HWC")
        if grid is not None:
            writer.add_image("test/worst_misclassified", torch.from_numpy(to_hwc(grid).copy()), 0, dataformats="HWC")

    kind = f"ensemble of {len(members)}" if cfg.ensemble else str(described[0]["checkpoint"])
    log.info("\nTest accuracy (%s): %.2f%% (%d errors in %d)\nResults: %s",
             kind, 100 * metrics["test_acc"], metrics["errors"], metrics["images"], out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    try:
        check_evaluate_config(cfg)
        return evaluate(cfg)["test_acc"]
    except (ConfigError, CheckpointError, MNISTUnavailableError) as err:  # one line, no traceback
        raise SystemExit("cannot evaluate: " + " ".join(line.strip() for line in str(err).splitlines())) from None


def cli(argv: list[str]) -> list[str]:
    """The arguments, checked before Hydra makes the evaluation's folder: a refusal writes nothing."""
    try:
        check_before_writing("evaluate", argv, check_evaluate_config)
    except (ConfigError, CheckpointError) as err:
        raise SystemExit("cannot evaluate: " + " ".join(line.strip() for line in str(err).splitlines())) from None
    return argv


if __name__ == "__main__":
    sys.argv[1:] = cli(sys.argv[1:])
    main()
