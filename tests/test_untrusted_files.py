"""Files the project reads but did not write: image files and run records.

No code runs from an image (PostScript is never handed to Ghostscript, whatever the file's name),
decoding stays within a memory budget, a damaged file costs one line and never the rest of a
batch; a run record (``summary.json``, ``failed.json``, ``overrides.yaml``) that is malformed is
skipped with a warning by everything that looks for runs, and never stops it.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, read_summary, train_env
from PIL import Image

from cnn_lightning import predict
from cnn_lightning.checkpoints import best_run, find_runs
from cnn_lightning.config import ConfigError
from cnn_lightning.images import ImageFileError, load_image_file, preprocess
from cnn_lightning.records import RecordError, read_overrides
from cnn_lightning.records import read_summary as strict_summary
from cnn_lightning.sweep import write_leaderboard
from cnn_lightning.train import expand_resume

# PostScript that, if run, writes a file (Ghostscript without -dSAFER, and some versions with it).
POSTSCRIPT = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n({marker}) (w) file closefile\nshowpage\n"
LOOPING_POSTSCRIPT = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{{}} loop\n"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.fixture(scope="module")
def seven(mnist_test) -> np.ndarray:
    return mnist_test[0][0]  # the first test digit, a 7


def _predict(paths: list[Path], checkpoint: Path, capsys) -> tuple[int, list[str], list[str]]:
    capsys.readouterr()
    status = predict.main([*map(str, paths), f"ckpt={checkpoint}"])
    out, err = capsys.readouterr()
    return status, out.splitlines(), [line for line in err.splitlines()[1:] if line.strip()]  # [0]: the net


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    return Path(read_summary(trained_run)["best_checkpoint"])


@pytest.mark.parametrize("name", ["digit.png", "digit.eps", "digit.ps", "digit", "digit.jpg"])
def test_postscript_is_never_run_whatever_the_file_is_called(name, tmp_path, checkpoint, seven, capsys):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / name
    hostile.write_text(POSTSCRIPT.format(marker=marker))
    good = tmp_path / "seven.png"
    Image.fromarray(seven).save(good)

    status, out, err = _predict([hostile, good], checkpoint, capsys)

    assert not marker.exists(), "PostScript ran"
    assert status == 1
    assert len(err) == 1 and "not an image this program reads" in err[0], err
    assert len(out) == 1 and out[0].startswith(f"{good}: 7"), out  # the rest of the batch still ran


def test_a_postscript_loop_and_a_pdf_are_refused_at_once(tmp_path, checkpoint, capsys):
    looping, pdf = tmp_path / "loop.png", tmp_path / "page.pdf"
    looping.write_text(LOOPING_POSTSCRIPT)
    pdf.write_bytes(PDF)
    result = subprocess.run([sys.executable, "-m", "cnn_lightning.predict", str(looping), str(pdf), f"ckpt={checkpoint}"],
                            cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines()[1:] if line.strip()]
    assert result.returncode == 1 and len(lines) == 2, result.stderr
    assert all("not an image this program reads" in line for line in lines), lines


def test_the_app_refuses_postscript_in_one_line(qtbot, tmp_path):
    from gui.draw_panel import DrawPanel

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "digit.png"
    hostile.write_text(POSTSCRIPT.format(marker=marker))
    panel = DrawPanel()
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.fileFailed, timeout=5000) as failed:
        assert panel.open_image(hostile) is False
    assert "not an image this program reads" in failed.args[0] and "\n" not in failed.args[0]
    assert not marker.exists()


def load_image_file_from(image: Image.Image, fmt: str, tmp: Path | None = None, **save) -> np.ndarray:
    path = (tmp or Path("/tmp")) / f"probe.{fmt.lower()}"
    image.save(path, fmt, **save)
    return load_image_file(path)


def test_a_lab_tiff_reads_as_its_lightness(tmp_path, seven):
    lab = Image.merge("LAB", [Image.fromarray(seven), Image.new("L", (28, 28), 128), Image.new("L", (28, 28), 128)])
    got = load_image_file_from(lab, "TIFF", tmp_path)
    want = load_image_file_from(Image.fromarray(seven), "PNG", tmp_path)
    assert np.allclose(got, want, atol=1 / 255)


def test_one_nan_pixel_in_a_float_tiff_does_not_blank_the_digit(tmp_path, seven):
    clean = seven.astype(np.float32) / 255
    damaged = clean.copy()
    damaged[0, 0] = np.nan
    damaged[27, 27] = np.inf
    got = load_image_file_from(Image.fromarray(damaged, mode="F"), "TIFF", tmp_path)
    want = load_image_file_from(Image.fromarray(clean, mode="F"), "TIFF", tmp_path)
    assert np.isfinite(got).all() and got.max() == 1.0
    assert np.allclose(got, want, atol=1e-6)


def _with_exif(seven: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned
    exif[0x010F] = "maker" * 20
    out = io.BytesIO()
    Image.fromarray(seven).save(out, "JPEG", exif=exif.tobytes(), quality=95)
    return out.getvalue()


def test_damaged_exif_blocks_cost_at_most_their_own_file(tmp_path, seven, checkpoint, capsys):
    data = _with_exif(seven)
    start = data.index(b"Exif")
    rng = random.Random(7)
    paths = []
    for i in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            mutated[start + rng.randrange(6, 120)] = rng.randrange(256)
        paths.append(tmp_path / f"exif{i:02d}.jpg")
        paths[-1].write_bytes(bytes(mutated))
    good = tmp_path / "zz_good.png"
    Image.fromarray(seven).save(good)

    status, out, err = _predict([*paths, good], checkpoint, capsys)

    assert len(out) + len(err) == len(paths) + 1, (out, err)  # one line a file, none lost
    assert out[-1].startswith(f"{good}: 7")
    assert all("Traceback" not in line for line in err)
    assert status == (1 if err else 0)


def test_a_file_name_with_a_newline_is_one_line(tmp_path, seven, checkpoint, capsys):
    odd = tmp_path / "seven\nnine.png"
    Image.fromarray(seven).save(odd)
    missing = tmp_path / "gone\r\n.png"
    status, out, err = _predict([odd, missing], checkpoint, capsys)
    assert status == 1
    assert out == [f"{tmp_path}/seven\\nnine.png: 7 " + out[0].split(": 7 ", 1)[1]], out
    assert len(err) == 1 and "gone\\r\\n.png" in err[0], err


def test_a_large_rgba_png_decodes_within_a_memory_budget(tmp_path):
    """A 3,990 x 3,990 RGBA PNG (16 megapixels, under the limit; a few hundred kB on disk) once
    peaked at +1 GB; the decoded image is now reduced before any float copy."""
    big = Image.new("RGBA", (3990, 3990), (0, 0, 0, 0))
    big.paste(Image.new("RGBA", (1400, 2400), (255, 255, 255, 255)), (1300, 800))
    path = tmp_path / "big.png"
    big.save(path)
    del big
    probe = ("import resource, sys; from cnn_lightning.images import load_image_file, preprocess; "
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
             "x = preprocess(load_image_file(sys.argv[1])); "
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, float(x.max()))")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], cwd=ROOT, env=train_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    grown_mib, peak = result.stdout.split()
    assert float(peak) > 0.9  # the white block was found
    assert int(grown_mib) < 200, f"decoding grew the peak memory by {grown_mib} MiB"  # was 455


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    """6,300 x 6,300 (40 megapixels, 160 kB as a PNG) once decoded to +1.1 GB."""
    path = tmp_path / "huge.png"
    Image.new("L", (6300, 6300)).save(path)
    with pytest.raises(ImageFileError, match=r"6300x6300 pixels is too large for a digit \(limit 16 megapixels\)"):
        load_image_file(path)


def _image_bytes(seven: np.ndarray) -> dict[str, bytes]:
    made = {}
    for fmt, mode in [("PNG", "L"), ("JPEG", "L"), ("TIFF", "L"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")]:
        out = io.BytesIO()
        Image.fromarray(seven).convert(mode).save(out, fmt)
        made[fmt] = out.getvalue()
    return made


def test_three_hundred_mutated_images_end_in_an_array_or_one_clear_error(tmp_path, seven):
    rng = random.Random(32)
    outcomes = {"read": 0, "refused": 0}
    for fmt, data in _image_bytes(seven).items():
        for i in range(50):
            mutated = bytearray(data)
            if i % 5 == 4:
                mutated = mutated[: rng.randrange(len(mutated))]
            else:
                for _ in range(rng.randint(1, 10)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            path = tmp_path / f"m.{fmt.lower()}"
            path.write_bytes(bytes(mutated))
            try:
                array = load_image_file(path)
            except ImageFileError as err:
                assert "\n" not in str(err) and str(path) in str(err), f"{fmt} {i}: {err}"
                outcomes["refused"] += 1
                continue
            assert array.dtype == np.float32 and array.ndim == 2 and np.isfinite(array).all()
            assert array.min() >= 0.0 and array.max() <= 1.0
            outcomes["read"] += 1
    print(f"\n300 mutated images: {outcomes}")
    assert outcomes["refused"] > 30 and outcomes["read"] > 30


# ---- run records ------------------------------------------------------------------------------


def _summary_mutations(good: dict, rng: random.Random):
    """(name, text) pairs: values of the wrong type, out of range, non-finite, huge or deep."""
    values = [float("inf"), float("-inf"), float("nan"), -1, 2, 10**30, 10**400 // 10**300, True, None, "0.99",
              [0.99], {"v": 0.99}, "", "x" * 10_000]
    for key in ("model", "best_checkpoint", "val_acc_best", "test_acc", "params", "epochs", "seed", "wall_time_s"):
        for value in values:
            yield f"{key}={str(value)[:20]}", json.dumps({**good, key: value})
        yield f"no-{key}", json.dumps({k: v for k, v in good.items() if k != key})
    text = json.dumps(good)
    for i in range(30):
        cut = rng.randrange(len(text))
        yield f"truncate{i}", text[:cut]
        data = list(text)
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = chr(rng.randrange(32, 127))
        yield f"flip{i}", "".join(data)
    yield "deep", "[" * 200_000 + "]" * 200_000
    yield "deep-object", '{"a":' * 50_000 + "1" + "}" * 50_000
    yield "big-int-digits", '{"val_acc_best": ' + "9" * 10_000 + "}"
    yield "huge-file", json.dumps({**good, "padding": "x" * 2_000_000})
    yield "not-utf8", "\udcff"
    yield "list", json.dumps([good])


def test_malformed_run_summaries_are_skipped_by_everything_that_looks_for_runs(trained_run, tmp_path, caplog):
    good = json.loads((trained_run / "summary.json").read_text())
    root = tmp_path / "outputs"
    shutil.copytree(trained_run, root / "good")
    cases = list(_summary_mutations(good, random.Random(5)))
    assert len(cases) >= 150
    for i, (_name, text) in enumerate(cases):
        run = root / f"bad{i:03d}"
        run.mkdir(parents=True)
        (run / "summary.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        (run / "failed.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    rankable = 1  # the good run
    for i, _case in enumerate(cases):
        try:
            summary = strict_summary(root / f"bad{i:03d}" / "summary.json")
        except RecordError as err:
            assert "\n" not in str(err)
            continue
        assert summary["val_acc_best"] is None or 0 <= summary["val_acc_best"] <= 1
        rankable += summary["val_acc_best"] is not None and Path(summary["best_checkpoint"]).is_file()

    runs = find_runs(root)  # never raises: what it ranks is exactly what the strict reader passes
    assert len(runs) == rankable and root / "good" in {r.run_dir for r in runs}
    assert all(0 <= r.val_acc <= 1 and r.checkpoint.is_file() for r in runs)
    assert best_run(root).val_acc == max(r.val_acc for r in runs)
    board = write_leaderboard(root)  # every malformed failed.json listed, none crashing it
    assert (root / "leaderboard.csv").is_file() and board


def _overrides_mutations(saved: list[str], rng: random.Random):
    for i in range(60):
        items = list(saved)
        text = rng.choice(items)
        pos = rng.randrange(len(text))
        items[rng.randrange(len(items))] = text[:pos] + rng.choice("=,[]{}$_~+@'\"\\ :") + text[pos:]
        yield f"edit{i}", json.dumps(items)  # JSON is YAML
    yield "deep", "[" * 10_000 + "]" * 10_000
    yield "alias-bomb", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    yield "python-tag", "- !!python/object/apply:os.system ['touch /tmp/x']\n"
    yield "numbers", "- 1\n- 2\n"


def test_mutated_overrides_are_refused_or_replay_only_settings(trained_run, tmp_path):
    saved = read_overrides(trained_run / ".hydra" / "overrides.yaml")
    outcomes = {"refused": 0, "replayed": 0}
    for name, text in _overrides_mutations(saved, random.Random(11)):
        run = tmp_path / name
        shutil.copytree(trained_run, run)
        (run / ".hydra" / "overrides.yaml").write_text(text)
        try:
            argv, resumed = expand_resume([f"resume={run}"])
        except ConfigError as err:
            assert "\n" not in str(err), name
            outcomes["refused"] += 1
            continue
        assert resumed == run.resolve()
        assert not any("_target_" in a or a.startswith(("hydra.", "+hydra")) for a in argv[:-2]), (name, argv)
        outcomes["replayed"] += 1
        shutil.rmtree(run)
    print(f"\nmutated overrides: {outcomes}")
    assert outcomes["refused"] >= 4


def test_a_good_digit_still_reads_after_all_this(seven, tmp_path):
    """The hardening keeps the common case: a plain PNG gives the digit preprocessing expects."""
    x = preprocess(load_image_file_from(Image.fromarray(seven), "PNG", tmp_path))
    assert x.shape == (1, 28, 28) and float(x.max()) == pytest.approx(1.0)


def test_the_app_starts_on_an_outputs_folder_full_of_malformed_summaries(qtbot, trained_run, tmp_path):
    """One bad summary.json once aborted the app ("QThread destroyed while running")."""
    from gui.window import MainWindow

    root = tmp_path / "outputs"
    shutil.copytree(trained_run, root / "runs" / "tiny" / "good")
    good = json.loads((trained_run / "summary.json").read_text())
    for i, (_name, text) in enumerate(_summary_mutations(good, random.Random(3))):
        (root / "runs" / "tiny" / f"bad{i:03d}").mkdir()
        (root / "runs" / "tiny" / f"bad{i:03d}" / "summary.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    window = MainWindow(outputs_root=root)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.active is not None, timeout=60_000)
    assert window.active == "tiny", window.active
    window.close()


def test_sigterm_during_an_export_leaves_no_partial_file(trained_run, tmp_path):
    import os
    import signal
    import time

    target = tmp_path / "out" / "tiny.onnx"
    process = subprocess.Popen(
        [sys.executable, "-m", "cnn_lightning.export", f"ckpt={read_summary(trained_run)['best_checkpoint']}",
         f"output={target}"], cwd=ROOT, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(target.parent.glob(".*.partial")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the export ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode != 0
    assert len(lines) == 1 and "stopped by SIGTERM; nothing written" in lines[0], err
    assert os.listdir(target.parent) == [], os.listdir(target.parent)
