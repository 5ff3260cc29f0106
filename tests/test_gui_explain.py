"""The app's explanations, driven with real mouse events on real widgets (offscreen Qt) with a
really trained checkpoint: the all-layers overview, one unit's arithmetic, saliency (five Captum
methods), probes, the smallest flip, the nearest training digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_summary

from gui import broken_qt_binding  # noqa: E402

if broken_qt_binding():
    pytest.fail(broken_qt_binding(), pytrace=False)
from PySide6.QtCore import Qt, QThread  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from cnn_lightning import attribution, explain  # noqa: E402
from cnn_lightning.inference import Predictor, preprocess  # noqa: E402
from cnn_lightning.mnist_files import raw_dir  # noqa: E402
from gui.explain_panel import TABS, ExplainPanel  # noqa: E402
from gui.saliency import METHOD_NAMES  # noqa: E402

WAIT = 15_000


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor.from_checkpoint(Path(read_summary(trained_run)["best_checkpoint"]))


@pytest.fixture(scope="module")
def digit(mnist_dir) -> torch.Tensor:
    """A real test digit (the first of the official test set, a 7), preprocessed as the app does."""
    images = np.fromfile(raw_dir(mnist_dir) / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16)
    return preprocess(images.reshape(-1, 28, 28)[0])


@pytest.fixture
def panel(qtbot, predictor, digit):
    panel = ExplainPanel()
    qtbot.addWidget(panel)
    panel.resize(1100, 640)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_predictor(predictor)
    panel.set_prediction(predictor.predict_input(digit))
    yield panel
    panel.shutdown()


def click(widget, point) -> None:
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point.toPoint())


def click_tab(panel: ExplainPanel, index: int) -> None:
    bar = panel.tabs.tabBar()
    click(bar, bar.tabRect(index).center().toPointF())


def test_the_overview_shows_every_stage_of_the_net(panel, predictor, digit):
    stages = panel.overview.stages
    prediction = predictor.predict_input(digit)
    kinds = dict(stages)
    assert [k for k in kinds.values()].count("maps") >= 5  # tiny: five conv stages, the squeeze, the pool
    for layer, kind in stages:
        values = prediction.maps.get(layer, prediction.vectors.get(layer))
        assert values is not None, f"{layer} has no output to show"
        assert kind == ("maps" if values.ndim == 3 and values.shape[1] * values.shape[2] > 1 else "bars")
    panel.grab()  # paints every column without error


def test_clicking_a_conv_map_cell_shows_that_units_real_arithmetic(qtbot, panel, predictor, digit):
    layer = "net.features.conv2.relu"  # tiny's second conv block, after its ReLU
    assert layer in dict(panel.overview.stages)
    channel, row, col = 5, 11, 12
    with qtbot.waitSignal(panel.field_selected, timeout=WAIT) as blocker:
        click(panel.overview, panel.overview.unit_centre(layer, channel, row, col))
    unit = panel.unit_panel.unit
    assert panel.tabs.currentWidget().widget() is panel.unit_panel
    assert (unit.layer, unit.channel, unit.row, unit.col) == ("net.features.conv2.conv", channel, row, col)
    # the numbers are the layer's: the conv's output and the ReLU's, as the net computed them
    maps = predictor.predict_input(digit).maps
    assert unit.value == pytest.approx(float(maps["net.features.conv2.conv"][channel, row, col]), abs=1e-5)
    assert abs(unit.total + unit.bias - unit.value) < 1e-4
    assert unit.activated == pytest.approx(float(maps[layer][channel, row, col]), abs=1e-5)
    # the receptive field: 5x5 pixels (two 3x3 convs) at (row, col) of the input
    assert blocker.args[0] == unit.field == (row, col, row + 4, col + 4)
    text = panel.unit_panel.equation.text()
    assert f"{unit.total:.4f}" in text and "ReLU" in text and "BatchNorm2d" in text
    # hovering a tap of the grids tells its numbers
    grids = panel.unit_panel.grids

    def hover_tap() -> bool:  # moved again each try: the grids are laid out once the unit arrives
        QTest.mouseMove(grids, grids.tap_centre(1, "kernel", 2, 0).toPoint())
        return grids.toolTip().startswith("channel 1, tap (2, 0)")

    qtbot.waitUntil(hover_tap, timeout=WAIT)
    assert f"{unit.kernel[1, 2, 0]:.4f}" in grids.toolTip()


def test_a_pool_cell_is_not_clickable(qtbot, panel):
    pool = "net.features.pool"
    with qtbot.assertNotEmitted(panel.overview.unit_clicked, wait=200):
        click(panel.overview, panel.overview.unit_centre(pool, 0, 5, 5))
    assert panel.unit_panel.unit is None


def test_the_unit_follows_the_drawing(qtbot, panel, predictor, digit):
    layer = "net.features.conv1.relu"
    with qtbot.waitSignal(panel.field_selected, timeout=WAIT):
        click(panel.overview, panel.overview.unit_centre(layer, 0, 10, 10))
    first = panel.unit_panel.unit
    shifted = explain.transform(digit, "shift_x", 2)
    with qtbot.waitSignal(panel.field_selected, timeout=WAIT):
        panel.set_prediction(predictor.predict_input(shifted))
    second = panel.unit_panel.unit
    assert (second.row, second.col) == (first.row, first.col)
    assert np.array_equal(second.patch, predictor.explain_unit(shifted, layer, 0, 10, 10).patch)
    assert not np.array_equal(second.patch, first.patch)


def test_saliency_is_computed_off_the_gui_thread_and_switches_method(qtbot, panel, predictor, digit):
    threads = []
    original = predictor.saliency

    def spy(x, method="occlusion"):
        threads.append(QThread.currentThread())
        return original(x, method)

    predictor.saliency = spy
    try:
        click_tab(panel, 1)
        qtbot.waitUntil(lambda: panel.saliency.image.saliency is not None, timeout=WAIT)
        assert threads and threads[0] is not QApplication.instance().thread()
        np.testing.assert_allclose(panel.saliency.image.saliency, original(digit, "occlusion"), atol=1e-6)
        assert "Occlusion" in panel.saliency.caption.text()
        before = panel.saliency.image.saliency
        panel.saliency.method.setFocus()
        QTest.keyClick(panel.saliency.method, Qt.Key.Key_Down)  # the keyboard picks "gradient"
        assert panel.saliency.current_method == "gradient"
        qtbot.waitUntil(lambda: panel.saliency.image.saliency is not before, timeout=WAIT)
        np.testing.assert_allclose(panel.saliency.image.saliency, original(digit, "gradient"), atol=1e-6)
        assert "Gradient" in panel.saliency.caption.text()
    finally:
        del predictor.saliency


def test_probe_curves_mark_the_flips_and_tell_values_on_hover(qtbot, panel, predictor, digit):
    click_tab(panel, 2)
    chart = panel.probes.charts["rotate"]
    qtbot.waitUntil(lambda: chart.label_at_zero is not None, timeout=WAIT)
    plain = predictor.predict_input(digit)
    assert chart.label_at_zero == plain.label
    for kind, probe_chart in panel.probes.charts.items():
        values = explain.PROBE_RANGES[kind]
        expected = predictor.probe(digit, kind, values)
        assert probe_chart.flips == explain.flip_points(values, expected)
        assert np.abs(expected[list(values).index(0)] - plain.probabilities).max() < 1e-4
    assert panel.probes.summary.text().startswith(f"Read as {plain.label}.")
    QTest.mouseMove(chart, chart.value_position(-45).toPoint())
    qtbot.waitUntil(lambda: chart.hovered_value() == -45.0, timeout=WAIT)
    assert chart.toolTip().startswith("-45 °:")


def test_a_blank_drawing_clears_the_explanations(qtbot, panel):
    click_tab(panel, 2)
    qtbot.waitUntil(lambda: panel.probes.charts["shift_x"].label_at_zero is not None, timeout=WAIT)
    panel.set_prediction(None)
    assert panel.probes.charts["shift_x"].label_at_zero is None
    assert panel.saliency.image.saliency is None
    panel.grab()


# ---- in the window -----------------------------------------------------------------------------


def test_in_the_window_the_overview_follows_the_drawing_and_a_click_outlines_the_field(qtbot, tmp_path, trained_run):
    """Draw with the mouse in the real window, Explain tab open: the overview shows the live
    prediction; clicking a unit outlines its receptive field on the window's 28x28 input."""
    from test_gui import SEVEN, draw, make_outputs, shows, wait_ready

    from gui.window import MINIMUM_SIZE, MainWindow

    window = MainWindow(outputs_root=make_outputs(tmp_path / "outputs", trained_run))
    qtbot.addWidget(window)
    window.resize(1366, 768)
    window.show()
    qtbot.waitExposed(window)
    try:
        wait_ready(qtbot, window)
        assert MINIMUM_SIZE[0] <= 1280 and MINIMUM_SIZE[1] <= 720
        assert window.minimumSize().width() <= 1280 and window.minimumSize().height() <= 720
        click_tab_of(window.right_column, 1)
        assert window.right_column.currentWidget() is window.explain
        with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)) as blocker:
            draw(qtbot, window.canvas, SEVEN)
        prediction = blocker.args[0].predictions[window.active]
        overview = window.explain.overview
        assert overview.isVisible() and overview.prediction is prediction
        layer = "net.features.conv3.relu"
        with qtbot.waitSignal(window.explain.field_selected, timeout=WAIT) as selected:
            click(overview, overview.unit_centre(layer, 2, 4, 4))
        assert selected.args[0] is not None and overview.field == selected.args[0]
        assert not window.input_panel.isVisible() and not window.prediction_panel.isVisible()  # the overview has its own input and output
        assert window.input_view.highlight == selected.args[0]  # there too, for the feature-maps tab
        unit = window.explain.unit_panel.unit
        assert unit.layer == "net.features.conv3.conv"
        assert unit.value == pytest.approx(float(prediction.maps[unit.layer][2, 4, 4]), abs=1e-5)
        # at 1280x720 the window still shows every panel, scrolling rather than clipping
        window.resize(1280, 720)
        qtbot.waitUntil(lambda: (window.width(), window.height()) == (1280, 720), timeout=WAIT)
        content = window.centralWidget().widget()
        need = content.minimumSizeHint()
        assert content.width() >= need.width() and content.height() >= need.height()
    finally:
        window.close()


def click_tab_of(tabs, index: int) -> None:
    bar = tabs.tabBar()
    click(bar, bar.tabRect(index).center().toPointF())


@pytest.mark.parametrize("name,kwargs", [("LeNet5", {}), ("LeNet5", {"activation": "tanh", "pool_type": "avg"}),
                                         ("AlexNetLite", {}), ("TinyNet", {}), ("MicroNet", {})])
def test_every_net_gets_an_overview_and_clickable_units(qtbot, name, kwargs, digit):
    """Each architecture (untrained weights: the arithmetic holds for any): the overview paints,
    and a click on the middle unit of every conv stage explains exactly that unit."""
    from collections import OrderedDict

    from torch import nn

    from cnn_lightning import nets
    from cnn_lightning.nets.layers import Normalize

    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(normalize=Normalize(), net=getattr(nets, name)(**kwargs))).eval()
    predictor = Predictor(model)
    panel = ExplainPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 600)
    panel.show()
    qtbot.waitExposed(panel)
    try:
        panel.set_model(predictor, predictor.predict_input(digit))
        panel.grab()
        clickable = [layer for layer, kind in panel.overview.stages
                     if kind == "maps" and explain.conv_feeding(model, layer)]
        assert clickable
        for layer in clickable:
            channels, height, width = panel.overview.values_of(layer).shape
            with qtbot.waitSignal(panel.field_selected, timeout=WAIT):
                click(panel.overview, panel.overview.unit_centre(layer, channels - 1, height // 2, width // 2))
            unit = panel.unit_panel.unit
            assert (unit.channel, unit.row, unit.col) == (channels - 1, height // 2, width // 2)
            assert abs(unit.total + unit.bias - unit.value) < 1e-4
    finally:
        panel.shutdown()


def test_a_hidden_explain_panel_computes_nothing_until_shown(qtbot, panel, predictor, digit):
    click_tab(panel, 2)
    chart = panel.probes.charts["shift_y"]
    qtbot.waitUntil(lambda: chart.label_at_zero is not None, timeout=WAIT)
    before = chart.probabilities
    panel.hide()
    shifted = explain.transform(digit, "shift_y", 3)
    with qtbot.assertNotEmitted(panel.jobs.finished, wait=300):
        panel.set_prediction(predictor.predict_input(shifted))  # drawing on with the tab hidden
    assert chart.probabilities is before
    with qtbot.waitSignal(panel.jobs.finished, timeout=WAIT):
        panel.show()  # shown again: the visible tab catches up with the drawing
    expected = predictor.probe(shifted, "shift_y", explain.PROBE_RANGES["shift_y"])
    assert np.abs(chart.probabilities - expected).max() < 1e-9


def test_every_saliency_method_is_offered_and_shown(qtbot, panel, predictor, digit):
    """The five Captum methods, picked one after the other with the keyboard; each map is the
    predictor's for the drawing."""
    click_tab(panel, TABS.index("saliency"))
    offered = [panel.saliency.method.itemData(i) for i in range(panel.saliency.method.count())]
    assert offered == list(attribution.SALIENCY_METHODS)
    qtbot.waitUntil(lambda: panel.saliency.image.saliency is not None, timeout=WAIT)
    panel.saliency.method.setFocus()
    for method in attribution.SALIENCY_METHODS[1:]:
        before = panel.saliency.image.saliency
        QTest.keyClick(panel.saliency.method, Qt.Key.Key_Down)
        assert panel.saliency.current_method == method
        qtbot.waitUntil(lambda before=before: panel.saliency.image.saliency is not before, timeout=WAIT)
        np.testing.assert_allclose(panel.saliency.image.saliency, predictor.saliency(digit, method), atol=1e-6)
        assert METHOD_NAMES[method].split()[0] in panel.saliency.caption.text()
        panel.grab()


def test_the_smallest_flip_tab_shows_an_image_the_net_reads_as_another_digit(qtbot, panel, predictor, digit):
    click_tab(panel, TABS.index("flip"))
    qtbot.waitUntil(lambda: panel.flip.flip is not None, timeout=60_000)
    flip = panel.flip.flip
    assert flip.label != predictor.predict_input(digit).label
    assert predictor.predict_input(torch.from_numpy(flip.image)).label == flip.label
    assert f"→ {flip.label}" in panel.flip.summary.text() and f"{flip.l2:.2f}" in panel.flip.summary.text()
    assert panel.flip.after.image is not None and panel.flip.change.image is not None
    panel.grab()


def test_the_neighbours_tab_shows_the_nearest_training_digits(qtbot, panel, predictor, digit):
    click_tab(panel, TABS.index("neighbours"))
    strip = panel.neighbours.strip
    qtbot.waitUntil(lambda: len(strip.neighbours) == 8, timeout=180_000)  # the first time: the index is built
    expected = predictor.neighbours(digit, k=8)
    assert [n.index for n in strip.neighbours] == [n.index for n in expected]
    label = predictor.predict_input(digit).label
    assert f"are {label}s" in panel.neighbours.summary.text()

    def hover() -> bool:
        QTest.mouseMove(strip, strip.thumb_rect(2).center().toPoint())
        return strip.toolTip().startswith(f"training image {expected[2].index}:")

    qtbot.waitUntil(hover, timeout=WAIT)
