"""The desktop app, driven as a person drives it: real widgets, real mouse events, real checkpoints
(pytest-qt, ``QT_QPA_PLATFORM=offscreen``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, read_summary, run_train
from PIL import Image

from gui import broken_qt_binding  # noqa: E402

if broken_qt_binding():  # fail loudly, not with an abort in the middle of a test
    pytest.fail(broken_qt_binding(), pytrace=False)
from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from cnn_lightning.images import load_image_file, preprocess  # noqa: E402
from cnn_lightning.inference import UNSURE_BELOW  # noqa: E402
from cnn_lightning.mnist_files import raw_dir  # noqa: E402
from gui.__main__ import parse_args  # noqa: E402
from gui.feature_maps import KERNELS  # noqa: E402
from gui.window import MainWindow  # noqa: E402

WAIT = 15_000  # ms; generous: the machine is shared, and a load runs a (small) net once



@pytest.fixture(scope="session")
def second_run(tmp_path_factory, mnist_dir) -> Path:
    """A real short run of another architecture: a wider tiny net, under its own model name."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny_wide"
    # Only a few batches: the tests switch to it and compare with it, they need no accuracy.
    overrides = [o for o in FAST if not o.startswith(("trainer.limit_train_batches", "trainer.limit_val_batches"))]
    result = run_train(*overrides, "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "test=false",
                       "model.name=tiny_wide", "model.net.c1=12", "model.net.c2=20", "max_params=null",
                       f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def make_outputs(root: Path, *runs: Path) -> Path:
    """An outputs folder of copies of ``runs`` (so a test may delete its files freely)."""
    for i, run in enumerate(runs):
        summary = read_summary(run)
        target = root / "runs" / summary["model"] / f"run{i}"
        (target / "checkpoints").mkdir(parents=True)
        checkpoint = target / "checkpoints" / Path(summary["best_checkpoint"]).name
        shutil.copy(summary["best_checkpoint"], checkpoint)
        summary["best_checkpoint"] = str(checkpoint)
        (target / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture
def outputs(tmp_path, trained_run) -> Path:
    return make_outputs(tmp_path / "outputs", trained_run)


@pytest.fixture
def two_models(tmp_path, trained_run, second_run) -> Path:
    return make_outputs(tmp_path / "outputs", trained_run, second_run)


@pytest.fixture
def open_window(qtbot):
    """Opens main windows; each is kept alive to the end of the test, then closed (which stops
    its worker thread)."""
    windows = []

    def open_(**kwargs) -> MainWindow:
        window = MainWindow(**kwargs)
        windows.append(window)
        qtbot.addWidget(window)
        window.resize(1300, 800)
        window.show()
        qtbot.waitExposed(window)
        return window

    yield open_
    for window in windows:
        window.close()


def wait_ready(qtbot, window: MainWindow) -> None:
    """Until a model is in use and the window shows its result for the (blank or not) canvas."""
    qtbot.waitUntil(lambda: window.active is not None and window.state in ("empty-canvas", "ready"), timeout=WAIT)


def draw(qtbot, canvas, points, hold: bool = False) -> None:
    """A stroke with real mouse events: press at the first point, move through the rest, release."""
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*points[0]))
    for point in points[1:]:
        QTest.mouseMove(canvas, QPoint(*point))
    if not hold:
        QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*points[-1]))


SEVEN = [(90, 70), (170, 68), (240, 70), (215, 140), (185, 205), (160, 270)]


def shows(window: MainWindow):
    """A check for waitSignal: the outcome carries the active model's prediction."""
    return lambda outcome: not outcome.blank and window.active in outcome.predictions


def test_a_stroke_drawn_with_the_mouse_gets_a_prediction(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    assert window.state == "empty-canvas" and window.active == "tiny"
    assert "best val acc" in window.details.text() and "test acc" in window.details.text()
    canvas = window.canvas
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)) as blocker:
        draw(qtbot, canvas, SEVEN)
    outcome = blocker.args[0]
    prediction = outcome.predictions["tiny"]
    assert window.state == "ready"
    assert prediction.probabilities.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(window.bars.probabilities(), prediction.probabilities)
    assert window.digit_label.text() == str(prediction.label)
    assert ("Not sure" in window.verdict_label.text()) == (prediction.confidence < UNSURE_BELOW)
    # the view shows exactly what the net saw: the canvas, preprocessed
    ink = canvas.to_array()
    np.testing.assert_array_equal(window.input_view.array(), preprocess(ink)[0].numpy())
    # the stroke is interpolated: ink lies between events 70 px apart, not only at them
    for (x0, y0), (x1, y1) in zip(SEVEN, SEVEN[1:], strict=False):
        assert ink[(y0 + y1) // 2, (x0 + x1) // 2] > 200
    assert ink[30, 30] == 0 and ink[300, 300] == 0
    # a feature-map grid of the chosen layer, and a legend for it
    layer = window.layer_combo.currentData()
    assert window.grid.count == prediction.maps[layer].shape[0] > 1
    assert "activation" in window.legend.caption


def test_prediction_is_live_while_the_mouse_is_still_down(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        draw(qtbot, window.canvas, SEVEN[:4], hold=True)
    assert window.canvas.is_drawing  # predicted mid-stroke
    QTest.mouseRelease(window.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*SEVEN[3]))
    assert not window.canvas.is_drawing


def test_clear_shows_the_empty_state_and_undo_brings_the_drawing_back(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        draw(qtbot, window.canvas, SEVEN)
    drawn = window.canvas.to_array()
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=lambda o: o.blank):
        qtbot.mouseClick(window.clear_button, Qt.MouseButton.LeftButton)
    assert window.state == "empty-canvas" and window.canvas.is_blank()
    assert window.verdict_label.text() == "Draw a digit" and window.bars.probabilities() is None
    assert window.input_view.array() is None
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        qtbot.mouseClick(window.undo_button, Qt.MouseButton.LeftButton)  # undoes the clear
    np.testing.assert_array_equal(window.canvas.to_array(), drawn)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=lambda o: o.blank):
        window.undo()  # undoes the stroke
    assert window.canvas.is_blank() and not window.canvas.can_undo


def test_brush_size_sets_the_stroke_width(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    widths = []
    for size in (6, 30):
        window.brush_slider.setValue(size)
        window.clear()
        draw(qtbot, window.canvas, [(60, 160), (260, 160)])
        widths.append(int((window.canvas.to_array()[:, 160] > 127).sum()))
    assert abs(widths[0] - 6) <= 2 and abs(widths[1] - 30) <= 2


def test_hovering_a_feature_map_unit_highlights_its_receptive_field(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    layer = "net.features.conv3.relu"  # maps of 10x10 units that each see 10x10 input pixels
    window.select_layer(layer)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        draw(qtbot, window.canvas, SEVEN)
    grid = window.grid
    predictor = window.predictors["tiny"]
    assert grid.count == predictor.shapes[layer][0] > 3 and grid.map_shape == (10, 10)
    with qtbot.waitSignal(grid.hovered, timeout=WAIT) as blocker:
        QTest.mouseMove(grid, grid.unit_centre(3, 2, 7).toPoint())
    assert blocker.args == [3, 2, 7]
    # unit (row 2, column 7) of conv3 sees input rows 4-13 and columns 14-23 (jump 2, size 10)
    assert window.input_view.highlight == predictor.receptive_field(layer, 2, 7) == (4, 14, 13, 23)
    assert "rows 4–13" in window.rf_label.text()
    low, high = grid.value_range(3)
    assert low == pytest.approx(float(window.last_outcome.predictions["tiny"].maps[layer][3].min()))
    assert high >= low
    with qtbot.waitSignal(grid.unhovered, timeout=WAIT):
        QTest.mouseMove(window.canvas, QPoint(5, 5))
    assert window.input_view.highlight is None


def test_first_layer_kernels_can_be_shown(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    window.select_layer(KERNELS)
    name, weights = window.predictors["tiny"].first_conv_kernels()
    conv = dict(window.predictors["tiny"].model.named_modules())[name]
    assert window.grid.count == weights.shape[0] == conv.out_channels and window.grid.map_shape == (3, 3)
    np.testing.assert_array_equal(weights, conv.weight.detach()[:, 0].numpy())
    bound = float(np.abs(weights[0]).max())
    assert window.grid.value_range(0) == pytest.approx((-bound, bound))  # diverging around zero
    assert "weight" in window.legend.caption


def test_no_checkpoint_gives_an_empty_state_naming_the_training_command(qtbot, open_window, tmp_path):
    window = open_window(outputs_root=tmp_path / "no-outputs-yet")
    assert window.state == "no-model" and window.model_combo.count() == 0
    assert "make train" in window.message and "python -m cnn_lightning.train model=tiny" in window.message
    assert window.result_stack.currentWidget() is window.state_label
    # drawing still works: the 28x28 input updates, with no prediction
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=lambda o: not o.blank) as blocker:
        draw(qtbot, window.canvas, SEVEN)
    assert blocker.args[0].predictions == {}
    assert window.input_view.array() is not None and window.state == "no-model"


def test_refresh_finds_a_run_trained_while_the_app_is_open(qtbot, open_window, tmp_path, trained_run):
    outputs = tmp_path / "outputs"
    window = open_window(outputs_root=outputs)
    assert window.state == "no-model"
    make_outputs(outputs, trained_run)  # as if `make train` had just finished
    qtbot.mouseClick(window.refresh_button, Qt.MouseButton.LeftButton)
    wait_ready(qtbot, window)
    assert window.active == "tiny" and window.model_combo.count() == 1
    assert window.result_stack.currentIndex() == 0 and window.layer_combo.isEnabled()


def _truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path, good: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(5000))


def _foreign(path: Path, good: Path) -> None:  # another program's weights
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)


def _other_architecture(path: Path, good: Path) -> None:
    # our own format, but the weights belong to a different net than the one it names
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["net"]["c1"] = 4
    torch.save(checkpoint, path)


def _foreign_lightning(path: Path, good: Path) -> None:  # a Lightning checkpoint of some other project
    torch.save({"state_dict": {"layer.weight": torch.zeros(2, 2)}, "hyper_parameters": {"lr": 0.1}}, path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _code(path: Path, good: Path) -> None:  # a pickle that would run code if loaded unsafely
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["payload"] = _Payload()
    torch.save(checkpoint, path)


@pytest.mark.parametrize("make, reason", [
    (_truncated, "truncated or corrupt"),
    (_garbage, "truncated or corrupt|refused"),  # which depends on the bytes torch meets first
    (_foreign, "not a Lightning checkpoint"),
    (_foreign_lightning, "not a cnn-lightning checkpoint"),
    (_other_architecture, "weights do not fit"),
    (_code, "refused"),
])
def test_a_bad_checkpoint_gives_a_clear_message_and_the_app_keeps_running(qtbot, open_window, tmp_path, trained_run, make, reason):
    bad = tmp_path / "model.ckpt"
    make(bad, Path(read_summary(trained_run)["best_checkpoint"]))
    window = open_window(outputs_root=tmp_path / "empty", checkpoint=bad)
    qtbot.waitUntil(lambda: window.state == "load-error", timeout=WAIT)
    assert window.active is None and window.failures.keys() == {f"file:{bad}"}
    assert str(bad) in window.message and "Could not load" in window.message
    assert re.search(reason, window.message), window.message
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=lambda o: not o.blank):
        draw(qtbot, window.canvas, SEVEN)  # still usable
    assert window.state == "load-error"


def test_a_given_checkpoint_opens_first_and_the_found_ones_follow(qtbot, open_window, tmp_path, trained_run, second_run):
    outputs = make_outputs(tmp_path / "outputs", trained_run)
    given = Path(read_summary(second_run)["best_checkpoint"])
    window = open_window(outputs_root=outputs, checkpoint=given)
    wait_ready(qtbot, window)
    assert [e.name for e in window.entries] == ["tiny_wide", "tiny"]
    assert window.active == f"file:{given}"
    assert "12" in window.layer_combo.itemText(0)  # the wide net's 12 first-layer maps


def test_switching_models_and_comparing_them_side_by_side(qtbot, open_window, two_models):
    window = open_window(outputs_root=two_models)
    wait_ready(qtbot, window)
    texts = sorted(window.model_combo.itemText(i) for i in range(window.model_combo.count()))
    assert [t.split()[0] for t in texts] == ["tiny", "tiny_wide"]  # one entry per architecture
    assert all(re.search(r"val \d+\.\d\d%", t) for t in texts)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        draw(qtbot, window.canvas, SEVEN)
    first = window.active
    other = next(e.key for e in window.entries if e.key != first)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=lambda o: other in o.predictions):
        window.model_combo.setCurrentIndex(window.model_combo.findData(other))
    assert window.active == other and window.state == "ready"
    assert window.grid.count == window.last_outcome.predictions[other].maps[window.layer_combo.currentData()].shape[0]
    # side by side: both nets on the same drawing
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT,
                          check_params_cb=lambda o: set(o.predictions) == {first, other}):
        window.compare_box.setChecked(True)
    assert window.compare_frame.isVisible()
    for key, card in window.compare_cards.items():
        prediction = window.last_outcome.predictions[key]
        assert card.verdict.text().startswith(str(prediction.label))
        np.testing.assert_allclose(card.bars.probabilities(), prediction.probabilities)


def test_a_checkpoint_deleted_while_running_is_handled(qtbot, open_window, two_models):
    window = open_window(outputs_root=two_models)
    wait_ready(qtbot, window)
    active = next(e for e in window.entries if e.key == window.active)
    other = next(e for e in window.entries if e.key != window.active)
    # the one in use disappears: a warning, and the loaded net keeps working
    active.checkpoint.unlink()
    qtbot.waitUntil(lambda: window.banner.isVisible() and "deleted" in window.banner.text(), timeout=WAIT)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        draw(qtbot, window.canvas, SEVEN)
    # the other one disappears before it is ever loaded: switching to it fails clearly
    other.checkpoint.unlink()
    with qtbot.waitSignal(window.modelFailed, timeout=WAIT) as blocker:
        window.select_model(other.key)
    assert "no such checkpoint file" in blocker.args[1]
    assert window.active == active.key and window.model_combo.currentData() == active.key
    assert "Could not load" in window.banner.text() and "Still using" in window.banner.text()
    # Refresh now finds nothing left: the empty state
    window.refresh_models()
    assert window.state == "no-model"


def test_open_an_image_file_and_save_the_drawing(qtbot, open_window, outputs, tmp_path, mnist_dir):
    # the first test digit (a 7), from the verified raw file: a 16-byte header, then the pixels
    digit = np.fromfile(raw_dir(mnist_dir) / "t10k-images-idx3-ubyte", dtype=np.uint8, count=784, offset=16)
    digit = digit.reshape(28, 28)
    paper = tmp_path / "seven.png"
    Image.fromarray(255 - np.kron(digit, np.ones((8, 8), dtype=np.uint8))).save(paper)  # dark on white
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)) as blocker:
        assert window.open_image(paper)
    shown = blocker.args[0].input
    assert np.abs(shown - preprocess(load_image_file(paper))[0].numpy()).mean() < 0.02
    saved = tmp_path / "drawing"
    assert window.save_drawing(saved)
    np.testing.assert_allclose(load_image_file(saved.with_suffix(".png")),
                               window.canvas.to_array() / window.canvas.to_array().max(), atol=1e-6)
    broken = tmp_path / "broken.png"
    broken.write_bytes(paper.read_bytes()[:100])
    assert not window.open_image(broken)
    assert window.banner.isVisible() and "broken.png" in window.banner.text()
    assert window.state == "ready"


def test_stale_results_are_dropped(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    window.canvas.draw_stroke([(100, 100), (200, 250)])
    qtbot.waitUntil(lambda: window.last_outcome is not None and not window.last_outcome.blank, timeout=WAIT)
    seen = []
    window.inference.finished.connect(seen.append)
    predictors = {"tiny": window.predictors["tiny"]}
    window.inference.predict(np.zeros((50, 50), dtype=np.uint8), predictors)  # blank, then replaced
    last = window.inference.predict(window.canvas.to_array(), predictors)
    qtbot.waitUntil(lambda: bool(seen), timeout=WAIT)
    qtbot.wait(200)  # room for a stale result to (wrongly) arrive
    assert [o.request for o in seen] == [last] and not seen[0].blank


def test_stress_random_strokes_clears_undos_and_model_switches(qtbot, open_window, two_models):
    window = open_window(outputs_root=two_models)
    wait_ready(qtbot, window)
    canvas = window.canvas
    keys = [e.key for e in window.entries]
    rng = np.random.default_rng(7)
    side = canvas.width()
    for i in range(300):
        action = rng.random()
        if action < 0.06:
            qtbot.mouseClick(window.clear_button, Qt.MouseButton.LeftButton)
        elif action < 0.16:
            qtbot.mouseClick(window.undo_button, Qt.MouseButton.LeftButton)
        elif action < 0.20:
            window.model_combo.setCurrentIndex(window.model_combo.findData(keys[rng.integers(len(keys))]))
        elif action < 0.22:
            window.compare_box.setChecked(not window.compare_box.isChecked())
        elif action < 0.25:
            window.layer_combo.setCurrentIndex(int(rng.integers(window.layer_combo.count())))
        else:
            window.brush_slider.setValue(int(rng.integers(4, 49)))
            points = [tuple(int(v) for v in rng.integers(-20, side + 20, size=2)) for _ in range(rng.integers(1, 6))]
            draw(qtbot, canvas, points)  # some points fall outside the canvas, as a real hand's do
        if i % 10 == 0:
            qtbot.wait(1)  # let results arrive mid-way, as they do for a person
    # when things settle, the window shows the newest drawing through the chosen model
    qtbot.waitUntil(lambda: window.active == window.current, timeout=WAIT)
    final = window.request_prediction()
    qtbot.waitUntil(lambda: window.last_outcome is not None and window.last_outcome.request == final, timeout=WAIT)
    outcome = window.last_outcome
    if canvas.is_blank():
        assert outcome.blank and window.state == "empty-canvas"
    else:
        np.testing.assert_array_equal(outcome.input, preprocess(canvas.to_array())[0].numpy())
        assert window.active in outcome.predictions and window.state == "ready"
        np.testing.assert_allclose(window.bars.probabilities(), outcome.predictions[window.active].probabilities)


def test_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gui", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--checkpoint" in result.stdout and "--outputs" in result.stdout
    args = parse_args(["--checkpoint", str(tmp_path / "x.ckpt"), "--outputs", str(tmp_path)])
    assert args.checkpoint == tmp_path / "x.ckpt" and args.outputs == tmp_path
