"""Export a trained net for use outside this project, and prove the file computes what the net does.

    python -m cnn_lightning.export                           # the best run found, as ONNX
    python -m cnn_lightning.export ckpt=path/to/x.ckpt       # any checkpoint
    python -m cnn_lightning.export arch=lenet format=torchscript

The file takes float32 images (N, 1, 28, 28) in [0, 1], white ink on black as in MNIST, for any N
(the MNIST normalisation is inside it) and returns logits (N, 10). It goes to
``<run>/export/<model>_<checkpoint>.onnx`` (``.pt`` for TorchScript) unless ``output=`` says
where. Before it is put there, the official test set runs through the file (onnxruntime, or
``torch.jit.load``) and through the PyTorch net: the file is kept only if both give the same digit
for every image and no logit differs by ``tolerance`` or more.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from cnn_lightning.checkpoints import CheckpointError, choose_checkpoint, load_model, read_checkpoint
from cnn_lightning.config import ConfigError, register
from cnn_lightning.images import shown
from cnn_lightning.mnist_files import MNISTUnavailableError, raw_dir
from cnn_lightning.nets.layers import MNIST_MEAN, MNIST_STD
from cnn_lightning.prechecks import check_before_writing, check_export_config, check_writable_dir

register()

INPUT, OUTPUT = "image", "logits"
EXTRA = "pip install -e '.[export]'"  # where onnx, onnxscript and onnxruntime come from
TORCHSCRIPT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


class MissingExtra(RuntimeError):
    """A package of the optional ``export`` extra is not installed."""


def _needs(*modules: str) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise MissingExtra(f"{module} is not installed: {EXTRA}") from err


def _example() -> torch.Tensor:
    # Two images: torch.export would fix a batch axis of size 1 to 1.
    return torch.rand(2, 1, 28, 28)


def export_onnx(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """One self-contained ONNX file (weights inside) with a dynamic batch axis."""
    _needs("onnx", "onnxscript")
    for name in ("onnxscript", "onnx_ir"):  # their graph optimiser reports every rewrite at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(
        model, (_example(),), dynamo=True, verbose=False,
        input_names=[INPUT], output_names=[OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.model.metadata_props.update(metadata)
    program.save(path, external_data=False)


def export_torchscript(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """A traced TorchScript module, for LibTorch (C++) and ``torch.jit.load``."""
    with warnings.catch_warnings():
        # PyTorch deprecates TorchScript for new code; this format exists for consumers that
        # still load it, and the trace of these straight-line nets is exact.
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATED, category=FutureWarning)
        traced = torch.jit.trace(model, _example())
        torch.jit.save(traced, str(path), _extra_files={"metadata.json": json.dumps(metadata)})


def onnx_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray]:
    _needs("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT], {INPUT: images.numpy()})[0]


def torchscript_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATED, category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return lambda images: module(images).numpy()


@dataclass(frozen=True)
class Format:
    suffix: str
    write: Callable[[nn.Module, Path, dict[str, str]], None]
    runner: Callable[[Path], Callable[[torch.Tensor], np.ndarray]]
    runtime: str


FORMATS = {
    "onnx": Format(".onnx", export_onnx, onnx_runner, "onnxruntime"),
    "torchscript": Format(".pt", export_torchscript, torchscript_runner, "torch.jit"),
}


@dataclass(frozen=True)
class Parity:
    """How an exported file's outputs compare with the PyTorch net's on the same images."""

    images: int
    different_digits: int  # images whose argmax differs
    max_logit_diff: float  # largest absolute difference of any logit
    accuracy: float  # the exported file's accuracy on these images

    def holds(self, tolerance: float) -> bool:
        return self.different_digits == 0 and self.max_logit_diff < tolerance


@torch.no_grad()
def compare(model: nn.Module, run: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor,
            labels: torch.Tensor, batch_size: int = 1000) -> Parity:
    """Run uint8 ``images`` (N, 1, 28, 28) through ``model`` and ``run`` (the exported file)."""
    different, correct, largest = 0, 0, 0.0
    for chunk, chunk_labels in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        x = chunk.float().div(255)
        reference, exported = model(x).numpy(), run(x)
        largest = max(largest, float(np.abs(reference - exported).max()))
        different += int((reference.argmax(1) != exported.argmax(1)).sum())
        correct += int((exported.argmax(1) == chunk_labels.numpy()).sum())
    return Parity(len(labels), different, largest, correct / len(labels))


def default_target(checkpoint: Path, model_name: str, suffix: str) -> Path:
    """``<run>/export/<model>_<checkpoint name><suffix>``; a loose file's run is its folder."""
    checkpoint = checkpoint.resolve()
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run_dir / "export" / f"{model_name}_{checkpoint.stem}{suffix}"


def check_output(target: Path, checkpoint: Path) -> None:
    """A ConfigError unless ``target`` can take the exported file: never the checkpoint itself (or
    any other input), never a folder, device or other non-regular file, in a folder that exists or
    can be made and is writable."""
    if target.exists() or target.is_symlink():
        if not target.is_file():
            raise ConfigError(f"output={shown(target)}: not a regular file; name a file to write")
        if target.resolve() == checkpoint.resolve() or (checkpoint.exists() and target.samefile(checkpoint)):
            raise ConfigError(f"output={shown(target)}: that is the checkpoint being exported; name another file")
    check_writable_dir("output", target.parent)


def check_not_data(target: Path, data_dir: str) -> None:
    """The exported file never lands among MNIST's raw files, which the check reads."""
    raw = raw_dir(data_dir).resolve()
    if target.resolve().is_relative_to(raw):
        raise ConfigError(f"output={shown(target)}: inside the data folder {shown(raw)}; name a file elsewhere")


def plan(cfg: DictConfig) -> tuple[Path, Format, str, Path]:
    """(checkpoint, format, net name, target file) that ``cfg`` asks for, all checked: nothing
    is read beyond the checkpoint and nothing written. A ConfigError or CheckpointError otherwise."""
    check_export_config(cfg)
    fmt = FORMATS[str(cfg.format)]
    checkpoint = choose_checkpoint(cfg.ckpt, cfg.arch, cfg.outputs_root)
    load_model(checkpoint)  # the whole check: bounded, and small
    name = str(read_checkpoint(checkpoint)["hyper_parameters"].get("name") or "net")
    target = Path(cfg.output).expanduser() if cfg.output else default_target(checkpoint, name, fmt.suffix)
    check_output(target, checkpoint)
    check_not_data(target, cfg.data.data_dir)
    return checkpoint, fmt, name, target


class Stopped(Exception):
    """SIGTERM (or SIGHUP) arrived: unwind, so that the temporary file is removed."""


@contextlib.contextmanager
def stop_signals_unwind():
    """SIGTERM and SIGHUP raise ``Stopped`` while the export runs, as Ctrl-C raises KeyboardInterrupt."""
    def stop(signum, frame):
        raise Stopped(f"stopped by {signal.Signals(signum).name}; nothing written")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def export(cfg: DictConfig) -> tuple[Path, Parity | None]:
    """Write the file ``cfg`` asks for; return its path and, with ``check``, the parity found."""
    checkpoint, fmt, name, target = plan(cfg)
    model = load_model(checkpoint)
    metadata = {
        "model": name, "checkpoint": str(checkpoint.resolve()),
        INPUT: "float32 (N, 1, 28, 28) in [0, 1], white ink on black as in MNIST",
        OUTPUT: "float32 (N, 10), one per digit 0-9",
        "normalization": f"inside: (x - {MNIST_MEAN}) / {MNIST_STD}",
    }

    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and moved there only once checked: a failed export or check, an
    # interrupt or a stop signal leaves the previous file, if any, as it was, and no partial file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with stop_signals_unwind():
            fmt.write(model, partial, metadata)
            parity = None
            if cfg.check:
                datamodule = instantiate(cfg.data)
                datamodule.prepare_data()
                datamodule.setup("test")
                parity = compare(model, fmt.runner(partial), *datamodule.splits["test"])
                if not parity.holds(cfg.tolerance):
                    raise SystemExit(
                        f"cannot export: {fmt.runtime} disagrees with PyTorch ({parity.different_digits} "
                        f"different digits, max logit difference {parity.max_logit_diff:.2g} >= {cfg.tolerance}); "
                        "nothing written"
                    )
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target, parity


def cli(argv: list[str]) -> list[str]:
    """The arguments, checked before anything is read beyond the checkpoint: one line if refused."""
    try:
        check_before_writing("export", argv, plan)
    except (ConfigError, CheckpointError) as err:
        raise SystemExit(f"cannot export: {err}") from None
    return argv


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        target, parity = export(cfg)
    except KeyboardInterrupt:
        raise SystemExit("cannot export: interrupted; nothing written") from None
    except (CheckpointError, MissingExtra, ConfigError, Stopped, MNISTUnavailableError) as err:
        raise SystemExit(f"cannot export: {err}") from None  # the user's file or set-up: one line
    except InstantiationException as err:  # a stop signal while Hydra built the data module
        cause = err.__cause__ or err.__context__
        while cause is not None and not isinstance(cause, (Stopped, MNISTUnavailableError)):
            cause = cause.__cause__ or cause.__context__  # Hydra wraps it in an ImportError, then its own
        if cause is None:
            raise
        raise SystemExit(f"cannot export: {cause}") from None
    except OSError as err:  # the disk filled, or the folder went away, while writing
        raise SystemExit(f"cannot export: {err.strerror or err}: {shown(err.filename or '')}; nothing written") from None
    print(f"{cfg.format}: {shown(target)} ({target.stat().st_size / 1e3:,.0f} kB)")
    if parity is not None:
        print(
            f"parity with PyTorch on the {parity.images:,} test images ({FORMATS[cfg.format].runtime}): "
            f"{parity.images - parity.different_digits:,} same digits, max logit difference "
            f"{parity.max_logit_diff:.1e}; test accuracy {parity.accuracy:.2%}"
        )


if __name__ == "__main__":
    sys.argv[1:] = cli(sys.argv[1:])
    main()
