"""Lightning's EMAWeightAveraging as ``callbacks.ema`` (conf/callbacks/ema.yaml): the checkpoints
hold the averaged weights, validation and the final test see them, load_model reads them, and a
resumed run continues the average. Real fits on real MNIST, a few batches each."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml
from conftest import ROOT, read_summary, run_train
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

from cnn_lightning.checkpoints import load_model
from cnn_lightning.data import MNISTDataModule
from cnn_lightning.module import Classifier

TINY = {"_target_": "cnn_lightning.nets.TinyNet"}
SGD = {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9}
BATCHES = 40  # enough for the default tiny recipe to leave chance level: raw and averaged weights then score apart


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def datamodule(mnist_dir) -> MNISTDataModule:
    dm = MNISTDataModule(str(mnist_dir), batch_size=64, eval_batch_size=500)
    dm.setup()
    return dm


class RawWeights(L.Callback):
    """The raw weights when training ends, before the averaging callback copies its own in."""

    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def fit(datamodule, folder, epochs: int, ckpt_path=None):
    """A real fit of the tiny net with EMA (decay 0.9) and the project's checkpointing."""
    L.seed_everything(0)
    module = Classifier(name="tiny", net=TINY, optimizer=SGD)
    raw, ema = RawWeights(), EMAWeightAveraging(decay=0.9)
    saver = ModelCheckpoint(dirpath=folder, filename="epoch{epoch:02d}", auto_insert_metric_name=False,
                            monitor="val/acc", mode="max", save_top_k=1, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=epochs, limit_train_batches=BATCHES, limit_val_batches=2,
        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[raw, ema, saver], deterministic=True,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer, module, raw, ema, saver


def net_weights(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def one_epoch(datamodule, tmp_path_factory):
    return fit(datamodule, tmp_path_factory.mktemp("ema"), epochs=1)


def test_best_and_last_checkpoints_hold_the_averaged_weights(one_epoch):
    _, _, raw, ema, saver = one_epoch
    averaged = net_weights(ema._average_model.module.state_dict())
    raw_net = net_weights(raw.state)
    assert any(not torch.equal(averaged[k], raw_net[k]) for k in averaged if averaged[k].is_floating_point())
    for path in (saver.best_model_path, saver.last_model_path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = net_weights(checkpoint["state_dict"])
        assert saved.keys() == averaged.keys()
        assert all(torch.equal(saved[k], averaged[k]) for k in saved), path
        current = net_weights(checkpoint["current_model_state"])  # the raw weights, for resuming
        assert all(torch.equal(current[k], raw_net[k]) for k in current), path


def test_load_model_reads_the_average_and_validation_scored_it(one_epoch, datamodule):
    _, _, raw, ema, saver = one_epoch
    model = load_model(saver.best_model_path)  # the bounded safe loader, limits unchanged
    images, labels = datamodule.splits["val"]
    images, labels = images[:1000].float() / 255, labels[:1000]  # limit_val_batches=2 of 500
    average = ema._average_model.module.eval()
    with torch.no_grad():
        logits = model(images)
        assert torch.allclose(logits, average(images), atol=1e-5)
        raw_net = Classifier(name="tiny", net=TINY, optimizer=SGD)
        raw_net.load_state_dict(raw.state)
        assert not torch.allclose(logits, raw_net.eval()(images), atol=1e-3)
    accuracy = (logits.argmax(1) == labels).float().mean()
    assert torch.isclose(saver.best_model_score, accuracy, atol=1e-6)  # val/acc, which chose it


def test_a_resumed_run_continues_the_average(datamodule, tmp_path):
    whole = fit(datamodule, tmp_path / "whole", epochs=2)
    fit(datamodule, tmp_path / "resumed", epochs=1)
    trainer, _, _, ema, saver = fit(datamodule, tmp_path / "resumed", epochs=2,
                                    ckpt_path=tmp_path / "resumed" / "last.ckpt")
    assert trainer.global_step == 2 * BATCHES and ema._latest_update_step == 2 * BATCHES
    assert int(ema._average_model.n_averaged) == 2 * BATCHES
    ends = [torch.load(s.last_model_path, map_location="cpu", weights_only=True) for s in (whole[4], saver)]
    for key in ("state_dict", "current_model_state"):  # the average, and the raw weights
        a, b = ends[0][key], ends[1][key]
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), key


def test_the_command_line_switch_tests_the_averaged_best_checkpoint_and_resumes(tmp_path, mnist_test):
    run_dir = tmp_path / "run"
    short = ["trainer.max_epochs=1", f"trainer.limit_train_batches={BATCHES}", "trainer.limit_val_batches=2",
             "trainer.limit_test_batches=2", "callbacks=minimal"]
    result = run_train(*short, "+callbacks@callbacks.ema=ema", "callbacks.ema.decay=0.9", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "callbacks used to create the checkpoint" not in result.stderr
    summary = read_summary(run_dir)
    images, labels = mnist_test
    images, labels = torch.from_numpy(images[:2000]).unsqueeze(1).float() / 255, torch.from_numpy(labels[:2000])
    best = summary["best_checkpoint"]
    with torch.no_grad():
        averaged_acc = (load_model(best)(images).argmax(1) == labels).float().mean().item()
        raw = Classifier(**torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"])
        raw.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["current_model_state"])
        raw_acc = (raw.eval()(images).argmax(1) == labels).float().mean().item()
    assert summary["test_acc"] == pytest.approx(averaged_acc, abs=1e-6)
    assert raw_acc != pytest.approx(averaged_acc, abs=1e-6)  # so the test above tells them apart

    result = run_train(f"resume={run_dir}", "trainer.max_epochs=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["epochs"] == 2 and summary["global_steps"] == 2 * BATCHES
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(last["averaging_state"]["n_averaged"]) == 2 * BATCHES


def composed_callbacks(*overrides: str, config_dir) -> dict:
    result = run_train("--config-dir", str(config_dir), *overrides, "--cfg", "job", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return yaml.safe_load(result.stdout)["callbacks"]


def test_a_model_config_can_switch_it_on_and_the_user_off(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny_ema.yaml").write_text(
        "# @package _global_\ndefaults:\n  - tiny\n  - /callbacks@callbacks.ema: ema\n  - _self_\n"
        "model:\n  name: tiny_ema\n"
    )
    callbacks = composed_callbacks("model=tiny_ema", "callbacks.ema.decay=0.99", config_dir=tmp_path)
    assert callbacks["ema"]["_target_"] == "lightning.pytorch.callbacks.EMAWeightAveraging"
    assert callbacks["ema"]["decay"] == 0.99 and "model_checkpoint" in callbacks
    callbacks = composed_callbacks("model=tiny_ema", "~callbacks.ema", config_dir=tmp_path)
    assert "ema" not in callbacks and "model_checkpoint" in callbacks
