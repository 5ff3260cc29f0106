"""The app says when a drawing doesn't look like a digit: real mouse strokes on the real window
with a really trained checkpoint (offscreen Qt); the verdict is the predictor's, computed off the
GUI thread, and the comparison row marks a net that reads another digit than the others."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import test_gui
import torch
from test_gui import SEVEN, WAIT, draw, shows, wait_ready

from gui import broken_qt_binding

if broken_qt_binding():
    import pytest

    pytest.fail(broken_qt_binding(), pytrace=False)

from cnn_lightning.inference import Prediction  # noqa: E402
from gui.comparison import ComparisonRow  # noqa: E402

open_window, outputs = test_gui.open_window, test_gui.outputs  # the app tests' fixtures


def verdict_after(qtbot, window, stroke) -> None:
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        stroke()
    label = window.prediction_panel.novelty
    qtbot.waitUntil(lambda: label.novelty is not None, timeout=180_000)  # the first time: the fit
    return label


def test_a_dot_is_flagged_and_the_verdict_is_the_predictors(qtbot, open_window, outputs):
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    predictor = window.predictors[window.active]

    def dot():  # a two-pixel stroke: one round blot, which preprocessing blows up to 20 px
        draw(qtbot, window.canvas, [(150, 150), (151, 151), (152, 152)])

    label = verdict_after(qtbot, window, dot)
    x = torch.from_numpy(window.last_outcome.input.copy())[None]
    expected = predictor.novelty(x)
    assert label.novelty.score == expected.score
    assert not label.novelty.is_digit
    assert label.isVisible() and "doesn't look like a digit" in label.text() and f"{expected.score:.3g}" in label.text()
    assert label.property("state") == "novel"
    assert window.explain.verdict.text() == label.text()  # the Explain tab, where this column gives way, says it too

    window.clear()
    label = verdict_after(qtbot, window, lambda: draw(qtbot, window.canvas, SEVEN))
    x = torch.from_numpy(window.last_outcome.input.copy())[None]
    assert label.novelty.is_digit == predictor.novelty(x).is_digit
    assert ("doesn't look like a digit" in label.text()) != label.novelty.is_digit


def test_the_comparison_row_marks_the_net_that_disagrees(qtbot, open_window, outputs):
    """Three real predictions of the trained net (two the same digit, one another) in a real row."""
    window = open_window(outputs_root=outputs)
    wait_ready(qtbot, window)
    with qtbot.waitSignal(window.predictionShown, timeout=WAIT, check_params_cb=shows(window)):
        draw(qtbot, window.canvas, SEVEN)
    outcome = window.last_outcome
    prediction: Prediction = outcome.predictions[window.active]
    other = Prediction(probabilities=prediction.probabilities[::-1].copy(), input=prediction.input, maps={})
    assert other.label != prediction.label
    entry = window.models.entry(window.active)
    three = [dataclasses.replace(entry, key=key, name=key) for key in "abc"]  # the same real run, three keys
    row = ComparisonRow()
    qtbot.addWidget(row)
    row.set_entries(three)
    outcome = dataclasses.replace(outcome, predictions={"a": prediction, "b": prediction, "c": other})
    models = SimpleNamespace(entries=three, predictors=dict.fromkeys("abc", window.predictors[window.active]),
                             failures={})
    row.show_outcome(models, outcome)
    assert [row.cards[k].disagrees for k in "abc"] == [False, False, True]
    assert row.cards["c"].verdict.text().startswith("≠ ")
