"""``python -m cnn_lightning.predict`` on real test digits saved as image files: white on black and
black on white, resized, colour JPEG; bad files; text and JSON output. A real trained checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, read_summary, train_env
from PIL import Image

from cnn_lightning.checkpoints import load_model

DIGITS = 100  # the first 100 test digits
LINE = re.compile(r"^(?P<file>.+): (?P<digit>\d) \((?P<p>\d+\.\d)%\)(?:, unsure: or (?P<second>\d) \((?P<q>\d+\.\d)%\))?$")


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnn_lightning.predict", *args],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    return Path(read_summary(trained_run)["best_checkpoint"])


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, mnist_test) -> Path:
    """Each digit three ways: as MNIST has it (28x28 PNG, white on black), inverted (black ink on
    white), and as a photo of paper (dark blue ink on cream, 84x84, JPEG)."""
    folder = tmp_path_factory.mktemp("digits")
    images, _ = mnist_test
    paper, ink = np.array([245, 235, 210]), np.array([20, 30, 120])
    for i, digit in enumerate(images[:DIGITS]):
        Image.fromarray(digit).save(folder / f"{i:03d}_plain.png")
        Image.fromarray(255 - digit).save(folder / f"{i:03d}_inverted.png")
        big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC), dtype=np.float32)[..., None] / 255
        Image.fromarray((paper * (1 - big) + ink * big).astype(np.uint8)).save(folder / f"{i:03d}_photo.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image: a folder's other files are left alone")
    return folder


def test_a_folder_of_digits_light_or_dark_any_size_colour(checkpoint, digit_files, mnist_test):
    result = run_predict(str(digit_files), f"ckpt={checkpoint}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["checkpoint"] == str(checkpoint) and document["model"] == "tiny"
    found = {Path(p["file"]).name: p for p in document["predictions"]}
    assert len(found) == 3 * DIGITS and "notes.txt" not in found
    for p in found.values():
        assert sum(p["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert p["digit"] == int(np.argmax(p["probabilities"])) and p["confidence"] == max(p["probabilities"])
        assert p["unsure"] == (p["confidence"] < 0.6) and p["runner_up"]["digit"] != p["digit"]

    images, labels = mnist_test
    labels = labels[:DIGITS]

    def digits(kind: str) -> np.ndarray:
        return np.array([found[f"{i:03d}_{kind}"]["digit"] for i in range(DIGITS)])

    plain, inverted, photo = digits("plain.png"), digits("inverted.png"), digits("photo.jpg")
    # Black on white is turned into white on black: the same pixels, the same probabilities.
    for i in range(DIGITS):
        assert found[f"{i:03d}_inverted.png"]["probabilities"] == pytest.approx(found[f"{i:03d}_plain.png"]["probabilities"], abs=1e-5)
    assert (inverted == plain).all()
    with torch.no_grad():
        direct = load_model(checkpoint)(torch.from_numpy(images[:DIGITS]).float().div(255)[:, None]).argmax(1).numpy()
    # MNIST digits are already cropped, fitted and centred: preprocessing them again keeps the digit
    assert (plain == direct).mean() >= 0.95
    # this short training (60 batches) reads 93 of these 100; the photos must read nearly as well
    assert (plain == labels).mean() >= 0.85
    assert (photo == labels).mean() >= 0.85 and (photo == plain).mean() >= 0.9


def test_text_output_is_one_line_per_file_in_order(checkpoint, digit_files):
    files = [str(digit_files / f"{i:03d}_photo.jpg") for i in (5, 0, 3)]
    result = run_predict(*files, f"ckpt={checkpoint}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert [LINE.match(line)["file"] for line in lines] == files
    for line in lines:
        match = LINE.match(line)
        assert (match["second"] is not None) == (float(match["p"]) < 60)  # the runner-up only when unsure
    assert result.stderr.strip() == f"tiny: {checkpoint}"


def test_bad_files_get_one_line_each_and_the_others_still_run(checkpoint, digit_files, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes((digit_files / "000_plain.png").read_bytes())
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")  # white paper, no ink
    (tmp_path / "truncated.png").write_bytes((digit_files / "001_photo.jpg").read_bytes()[:400])
    (tmp_path / "text.png").write_text("hello")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    bad = {"blank.png": "no ink", "truncated.png": "truncated", "text.png": "not an image", "missing.png": "cannot read"}
    args = [str(tmp_path / name) for name in ["good.png", *bad]] + [str(empty)]
    result = run_predict(*args, f"ckpt={checkpoint}")
    assert result.returncode == 1
    assert LINE.match(result.stdout.strip())["file"] == str(good)
    errors = result.stderr.strip().splitlines()[1:]  # after the line naming the checkpoint
    assert len(errors) == len(bad) + 1 and "Traceback" not in result.stderr
    for line, (name, says) in zip(errors, bad.items(), strict=False):
        assert line.startswith(str(tmp_path / name)) and says in line, line
    assert errors[-1] == f"{empty}: no image files in this folder"

    as_json = json.loads(run_predict(*args, f"ckpt={checkpoint}", "--json").stdout)["predictions"]
    assert [("error" in p) for p in as_json] == [False] + [True] * (len(bad) + 1)


@pytest.mark.parametrize("bad", ["missing", "corrupt", "unknown key"])
def test_a_bad_checkpoint_or_override_is_refused_in_one_line(bad, checkpoint, digit_files, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(checkpoint.read_bytes()[:3000])
    override, says = {
        "missing": (f"ckpt={tmp_path / 'nope.ckpt'}", "no such checkpoint file"),
        "corrupt": (f"ckpt={corrupt}", "not a readable checkpoint"),
        "unknown key": ("ckpts=x", "Could not override 'ckpts'"),
    }[bad]
    result = run_predict(str(digit_files / "000_plain.png"), override)
    assert result.returncode == 1 and result.stdout == ""
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
