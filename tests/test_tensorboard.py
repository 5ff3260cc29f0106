"""TensorBoard monitoring, read back with TensorBoard's own readers from real training runs.

``trained_run`` (conftest: the default callbacks, 60 batches, 2 validation and 2 test batches)
and one extra short run with other callback settings and the full test set.
"""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest
import torch
from conftest import FAST, compose_train, read_summary, run_train
from PIL import Image
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
    metadata,
)
from tensorboard.util import tensor_util

import cnn_lightning
from cnn_lightning.inference import feature_maps

KEEP_ALL = {"images": 0, "histograms": 0, "tensors": 0, "scalars": 0, "compressedHistograms": 0}
FAST_BATCHES, EVAL_BATCH, FAST_TEST_BATCHES = 60, 1000, 2  # as in conftest.FAST and conf/data


def load(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance=KEEP_ALL)
    events.Reload()
    return events


def text(events: EventAccumulator, tag: str) -> str:
    (event,) = events.Tensors(f"{tag}/text_summary")[-1:]
    return tensor_util.make_ndarray(event.tensor_proto).item().decode()


def picture(event) -> np.ndarray:
    image = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert image.shape == (event.height, event.width, 3)
    return image


def table(markdown: str) -> list[list[str]]:
    """The body rows of a Markdown table, as cells."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


@pytest.fixture(scope="module")
def events(trained_run) -> EventAccumulator:
    return load(trained_run)


@pytest.fixture(scope="module")
def other_run(tmp_path_factory, mnist_dir):
    """3 epochs of 4 batches, the full test set, feature maps every 2 epochs, histograms every
    4 steps, no augmented-inputs grid, another dropout (a second row in the HPARAMS table)."""
    run_dir = tmp_path_factory.mktemp("tb") / "other"
    overrides = [o for o in FAST if not o.startswith(("trainer.limit_test_batches", "trainer.max_epochs",
                                                       "trainer.limit_train_batches", "trainer.limit_val_batches"))]
    result = run_train(
        *overrides, "trainer.max_epochs=3", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
        "callbacks.feature_maps.every_n_epochs=2", "callbacks.histograms.every_n_steps=4",
        "~callbacks.augmented_inputs", "model.net.dropout=0.1", f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, load(run_dir)


def test_scalars_per_step_and_epoch(events, trained_run):
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best",
        "test/loss", "test/acc", "lr-SGD", "perf/images_per_sec", "perf/images_per_sec_epoch",
        "perf/epoch_time_s",
    } <= scalars
    assert all(0 < e.value < 3 for e in events.Scalars("train/loss_step"))
    assert all(e.value > 0 for e in events.Scalars("lr-SGD"))
    (rate,) = events.Scalars("perf/images_per_sec_epoch")
    (seconds,) = events.Scalars("perf/epoch_time_s")
    # The rate counts exactly the images trained on: 60 batches of 128.
    assert rate.value * seconds.value == pytest.approx(FAST_BATCHES * 128, rel=1e-4)
    assert 10 < rate.value < 1e6
    windows = events.Scalars("perf/images_per_sec")  # one per log_every_n_steps steps
    assert windows and all(0 < e.step <= FAST_BATCHES and 10 < e.value < 1e6 for e in windows)


def test_hparams_session_holds_the_runs_settings_and_hp_metrics(events, trained_run):
    summary = read_summary(trained_run)
    hparams_tags = events.PluginTagToContent(metadata.PLUGIN_NAME)
    # A session only: an experiment summary (Lightning's hp_metric) would fix the table's columns.
    assert set(hparams_tags) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(hparams_tags[metadata.SESSION_START_INFO_TAG])
    values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert values["name"] == "tiny" and values["net/c1"] == 10 and values["optimizer/lr"] == 0.05
    assert values["batch_size"] == 128 and values["max_epochs"] == 1 and values["augment/enabled"] == "True"
    assert "hp_metric" not in events.Tags()["scalars"]
    assert events.Scalars("hp/val_acc_best")[-1].value == pytest.approx(summary["val_acc_best"])
    assert events.Scalars("hp/test_acc")[-1].value == pytest.approx(summary["test_acc"])
    assert events.Scalars("hp/params")[-1].value == summary["params"]


def test_hparams_tab_compares_runs_in_one_table(trained_run, other_run, tmp_path):
    """TensorBoard's own HPARAMS backend, over a logdir holding both runs as a sweep would."""
    (tmp_path / "a").symlink_to(trained_run / "tensorboard")
    (tmp_path / "b").symlink_to(other_run[0] / "tensorboard")
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    context = backend_context.Context(base_plugin.TBContext(
        logdir=str(tmp_path), multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, str(tmp_path))))
    experiment = get_experiment.Handler(RequestContext(), context, "", api_pb2.GetExperimentRequest()).run()
    assert {"name", "net/dropout", "optimizer/lr", "batch_size"} <= {h.name for h in experiment.hparam_infos}
    assert {"hp/val_acc_best", "hp/test_acc", "hp/params"} <= {m.name.tag for m in experiment.metric_infos}
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=10, allowed_statuses=list(api_pb2.Status.values()))
    groups = list_session_groups.Handler(RequestContext(), context, "", request).run().session_groups
    rows = {g.name: g for g in groups}
    assert set(rows) == {"a", "b"}
    assert rows["a"].hparams["net/dropout"].number_value == compose_train().model.net.dropout  # the default recipe's
    assert rows["b"].hparams["net/dropout"].number_value == 0.1
    for name, run_dir in (("a", trained_run), ("b", other_run[0])):
        metrics = {m.name.tag: m.value for m in rows[name].metric_values}
        summary = read_summary(run_dir)
        assert metrics["hp/test_acc"] == pytest.approx(summary["test_acc"])
        assert metrics["hp/val_acc_best"] == pytest.approx(summary["val_acc_best"])


def test_augmented_training_inputs_grid(events):
    (event,) = events.Images("inputs/train_augmented")
    assert event.step == 0
    assert (event.width, event.height) == (8 * (56 + 2) + 2,) * 2  # 8x8 digits at 2x, padded
    image = picture(event)
    assert image.std() > 20  # digits, not a blank canvas


def test_worst_misclassified_validation_digits(events):
    (event,) = events.Images("val/misclassified")
    rows = table(text(events, "val/misclassified"))
    assert 1 <= len(rows) <= 16
    losses = [float(r[4]) for r in rows]
    assert losses == sorted(losses, reverse=True)  # worst first
    assert all(r[1] != r[2] for r in rows)  # every one is misclassified
    ncol = min(8, len(rows))
    assert event.width == ncol * (84 + 4) + 4
    assert event.height == -(-len(rows) // 8) * (84 + 30 + 4) + 4


def confusion(events) -> np.ndarray:
    return np.array([[int(c) for c in row[1:]] for row in table(text(events, "test/confusion_matrix"))])


def test_confusion_matrix_of_what_was_tested(events):
    matrix = confusion(events)
    assert matrix.shape == (10, 10)
    assert matrix.sum() == FAST_TEST_BATCHES * EVAL_BATCH
    assert np.trace(matrix) / matrix.sum() == pytest.approx(events.Scalars("test/acc")[-1].value, abs=1e-6)
    (image,) = events.Images("test/confusion_matrix")
    assert (image.width, image.height) == (56 + 10 * 44 + 8, 52 + 10 * 44 + 34)


def test_confusion_matrix_covers_the_full_test_set(other_run):
    _, events = other_run
    matrix = confusion(events)
    assert matrix.sum() == 10_000  # the official test set
    assert np.trace(matrix) / matrix.sum() == pytest.approx(events.Scalars("test/acc")[-1].value, abs=1e-6)
    assert matrix.sum(1).min() > 800  # every digit class is there in its real proportion


def test_feature_maps_of_every_layer(events, trained_run):
    model = cnn_lightning.load_model(read_summary(trained_run)["best_checkpoint"])
    _, maps = feature_maps(model, torch.zeros(1, 1, 28, 28))
    expected = [f"feature_maps/{i:02d}_{name}" for i, name in enumerate(maps)]
    assert sorted(t for t in events.Tags()["images"] if t.startswith("feature_maps/")) == expected
    for tag, output in zip(expected, maps.values(), strict=True):
        (event,) = events.Images(tag)  # 1 epoch: the last one, so logged once
        assert event.height == 10 * (28 + 2) + 2  # one row per digit class
        assert event.width == (min(output.shape[1], 16) + 1) * (28 + 2) + 2  # the digit + channels
        assert picture(event).std() > 5


def test_feature_maps_every_n_epochs_and_after_the_last(other_run):
    _, events = other_run
    tags = [t for t in events.Tags()["images"] if t.startswith("feature_maps/")]
    assert tags
    for tag in tags:
        assert [e.step for e in events.Images(tag)] == [8, 12]  # epochs 2 and 3 (the last), 4 steps each


def test_first_conv_kernels(events):
    (tag,) = [t for t in events.Tags()["images"] if t.startswith("kernels/")]
    assert tag.endswith("conv1.conv")
    start, end = events.Images(tag)
    assert (start.step, end.step) == (0, FAST_BATCHES)
    assert (end.width, end.height) == (8 * 42 + 2, 2 * 42 + 2)  # 10 kernels of 3x3, 40 px each: 8 a row
    assert not np.array_equal(picture(start), picture(end))  # training changed them


def test_histograms_of_weights_and_gradients(events, trained_run):
    state = torch.load(read_summary(trained_run)["best_checkpoint"], map_location="cpu", weights_only=True)
    model = cnn_lightning.load_model(read_summary(trained_run)["best_checkpoint"])
    params = {f"model.{n}": p.numel() for n, p in model.named_parameters()}
    assert set(params) <= set(state["state_dict"])
    tags = set(events.Tags()["histograms"])
    assert tags == {f"{kind}/{n}" for n in params for kind in ("weights", "grads")}
    for name, numel in params.items():
        (weights,) = events.Histograms(f"weights/{name}")  # every 200 steps: step 0 only
        assert weights.step == 0 and weights.histogram_value.num == numel


def test_histograms_every_n_steps_and_callbacks_switch_off(other_run):
    _, events = other_run
    assert [e.step for e in events.Histograms("grads/model.net.features.conv1.conv.weight")] == [0, 4, 8]
    assert "inputs/train_augmented" not in events.Tags()["images"]  # ~callbacks.augmented_inputs


def test_model_graph_and_layer_summary(events):
    graph = events.Graph()
    ops = {node.op for node in graph.node}
    assert "aten::_convolution" in ops or any("conv" in op.lower() for op in ops)
    summary = text(events, "model/summary")
    assert re.search(r"conv1", summary) and re.search(r"conv5", summary)
    assert all(line.startswith("    ") for line in summary.split("\n\n")[0].splitlines())  # code block


def test_layer_summary_falls_back_to_lightning_without_the_summary_module(monkeypatch):
    from cnn_lightning.callbacks.scalars import layer_summary
    from cnn_lightning.module import Classifier

    module = Classifier(
        name="tiny", net={"_target_": "cnn_lightning.nets.TinyNet"},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
    )
    monkeypatch.setitem(sys.modules, "cnn_lightning.summary", None)  # import now raises ImportError
    body, source = layer_summary(module)
    assert source == "Lightning ModelSummary"
    assert "model.net.features.conv1.conv" in body and "Trainable params" in body
