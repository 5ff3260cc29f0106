"""Export of every net to ONNX (and TorchScript), with parity checked here, independently of the
command's own check, on the whole official test set through onnxruntime; and the command's
refusals. Real short trainings, real files, real onnxruntime."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import ROOT, run_train, train_env
from hydra import compose, initialize_config_dir

from cnn_lightning.checkpoints import find_runs, load_model
from cnn_lightning.config import register
from cnn_lightning.export import export

NETS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))  # every net there is
TOLERANCE = 1e-4


def export_config(*overrides: str):
    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("export", overrides=list(overrides))


def run_export(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnn_lightning.export", *overrides],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, mnist_dir) -> dict:
    """One short real training of every net (20 batches, in one multirun): {model: checkpoint}."""
    sweep = tmp_path_factory.mktemp("nets")
    result = run_train(
        "-m", f"model={','.join(NETS)}", "trainer.max_epochs=1", "trainer.limit_train_batches=20",
        "trainer.limit_val_batches=2", "test=false", "~callbacks.progress_bar", f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = {run.model: run.checkpoint for run in find_runs(sweep)}
    assert sorted(found) == NETS
    return found


@pytest.fixture(scope="module")
def test_images(mnist_test) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = mnist_test
    return torch.from_numpy(images).float().div(255)[:, None], labels


@torch.no_grad()
def pytorch_logits(checkpoint, images: torch.Tensor) -> np.ndarray:
    model = load_model(checkpoint)
    return torch.cat([model(chunk) for chunk in images.split(1000)]).numpy()


@pytest.mark.parametrize("net", NETS)
def test_onnx_export_gives_pytorchs_logits_on_the_whole_test_set(net, checkpoints, test_images):
    checkpoint = checkpoints[net]
    # The command's own check is tested below; here the test checks, on its own.
    target, parity = export(export_config(f"ckpt={checkpoint}", "check=false"))
    assert target == checkpoint.parent.parent / "export" / f"{net}_{checkpoint.stem}.onnx" and parity is None

    images, _ = test_images
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "image" and given.shape[1:] == [1, 28, 28]
    assert isinstance(given.shape[0], str)  # a named, dynamic batch axis
    exported = np.concatenate([session.run(["logits"], {"image": chunk.numpy()})[0] for chunk in images.split(2500)])
    reference = pytorch_logits(checkpoint, images)
    assert exported.shape == (10_000, 10)
    # [0, 1] images in, PyTorch's logits out: the MNIST normalisation is inside the graph
    assert (exported.argmax(1) == reference.argmax(1)).all()
    assert np.abs(exported - reference).max() < TOLERANCE
    for batch in (1, 7):  # other batch sizes than the export's example
        (out,) = session.run(["logits"], {"image": images[:batch].numpy()})
        assert out.shape == (batch, 10) and np.abs(out - reference[:batch]).max() < TOLERANCE
    properties = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert properties["model"] == net and "normalization" in properties


def test_the_command_checks_its_onnx_file_on_the_test_set(checkpoints, test_images):
    checkpoint = checkpoints["tiny"]
    result = run_export(f"ckpt={checkpoint}")
    assert result.returncode == 0, result.stderr[-3000:]
    target = checkpoint.parent.parent / "export" / f"tiny_{checkpoint.stem}.onnx"
    written, checked = result.stdout.strip().splitlines()
    assert written.startswith(f"onnx: {target} ")
    figures = re.fullmatch(
        r"parity with PyTorch on the 10,000 test images \(onnxruntime\): 10,000 same digits, "
        r"max logit difference (\S+); test accuracy (\S+)%", checked,
    )
    assert figures and float(figures[1]) < TOLERANCE, checked
    images, labels = test_images
    accuracy = (pytorch_logits(checkpoint, images).argmax(1) == labels).mean()
    assert float(figures[2]) == pytest.approx(100 * accuracy, abs=0.01)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # loading it is the point
def test_torchscript_export_from_the_command_line(checkpoints, test_images):
    checkpoint = checkpoints["tiny"]
    result = run_export(f"ckpt={checkpoint}", "format=torchscript")
    assert result.returncode == 0, result.stderr[-3000:]
    target = checkpoint.parent.parent / "export" / f"tiny_{checkpoint.stem}.pt"
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"torchscript: {target} ")
    assert "10,000 same digits" in lines[1]
    assert "Warning" not in result.stderr  # TorchScript's deprecation notice is not the user's business
    images, _ = test_images
    module = torch.jit.load(str(target))
    with torch.no_grad():
        traced = torch.cat([module(chunk) for chunk in images.split(1000)]).numpy()
    assert np.abs(traced - pytorch_logits(checkpoint, images)).max() < TOLERANCE


def test_a_file_that_fails_the_check_is_not_kept(checkpoints, tmp_path):
    """TorchScript reproduces PyTorch exactly, so a tolerance of 0 must refuse it."""
    target = tmp_path / "net.pt"
    target.write_bytes(b"the previous export")
    with pytest.raises(SystemExit, match="disagrees with PyTorch"):
        export(export_config(f"ckpt={checkpoints['tiny']}", "format=torchscript", "tolerance=0", f"output={target}"))
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]  # no partial file left


@pytest.mark.parametrize("bad", ["format", "missing", "corrupt"])
def test_bad_input_is_refused_in_one_line(bad, checkpoints, tmp_path):
    checkpoint = checkpoints["tiny"]
    if bad == "format":
        overrides, says = [f"ckpt={checkpoint}", "format=tflite"], "format=tflite is not one of onnx, torchscript"
    elif bad == "missing":
        overrides, says = [f"ckpt={tmp_path / 'nope.ckpt'}"], "no such checkpoint file"
    else:
        corrupt = tmp_path / "checkpoints" / "corrupt.ckpt"
        corrupt.parent.mkdir()
        shutil.copy(checkpoint, corrupt)
        corrupt.write_bytes(corrupt.read_bytes()[:5000])  # truncated
        overrides, says = [f"ckpt={corrupt}"], "not a readable checkpoint"
    result = run_export(*overrides)
    assert result.returncode != 0
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "export").exists()
