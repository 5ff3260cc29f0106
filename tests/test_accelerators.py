"""Accelerator configs and the speed switches (precision, channels_last, torch.compile).

Each switch is trained for a few real batches with the project's ``train()`` on whatever this
machine has; tests that need a CUDA GPU or Apple's MPS run only where one exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

import cnn_lightning
from cnn_lightning.config import native_precision
from cnn_lightning.train import train

CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()
# A handful of real batches, then the usual validation, checkpoint and test of the best checkpoint.
# (++model.<switch>: the model configs need not list the Classifier's speed switches.)
FEW_BATCHES = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "callbacks=minimal",
    "~logger",
    "~callbacks.lr_monitor",  # it needs a logger
]


class Probe(Callback):
    """Test-only: what the trainer really did, written to ``out`` as JSON after the first batches."""

    def __init__(self, out: str):
        self.out, self.record, self.losses = Path(out), {}, []

    def on_train_start(self, trainer, pl_module):
        def keep_dtype(module, args, output):
            self.record.setdefault("logits_dtype", str(output.dtype))

        pl_module.model.register_forward_hook(keep_dtype)
        # a 3x3 conv with several input channels: its weight's layout shows channels_last
        conv = next(m for m in pl_module.model.modules()
                    if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size[0] > 1)
        images = trainer.datamodule.splits["train"][0]
        self.record.update(
            precision=trainer.precision,
            accelerator=type(trainer.accelerator).__name__,
            root_device=str(trainer.strategy.root_device),
            data_device=str(images.device),
            channels_last=conv.weight.is_contiguous(memory_format=torch.channels_last)
            and not conv.weight.is_contiguous(),
            # nn.Module.compile() leaves the module in place and routes calls to the compiled code
            compiled=getattr(pl_module.model, "_compiled_call_impl", None) is not None,
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.record.setdefault("batch_device", str(batch[0].device))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        self.out.write_text(json.dumps({**self.record, "losses": self.losses}))


def compose_train(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def train_few_batches(tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    """(summary, probe record) of a real, short training with ``overrides``."""
    probe = tmp_path / "probe.json"
    cfg = compose_train(
        tmp_path, *FEW_BATCHES, *overrides,
        "+callbacks.probe._target_=test_accelerators.Probe", f"+callbacks.probe.out={probe}",
    )
    summary = train(cfg)
    return summary, json.loads(probe.read_text())


def expected_device() -> str:
    return "cuda:0" if CUDA else "mps:0" if MPS else "cpu"


@pytest.mark.parametrize(
    "group, accelerator, devices, strategy",
    [
        ("default", "auto", 1, "auto"),
        ("cpu", "cpu", 1, "auto"),
        ("gpu", "gpu", 1, "auto"),
        ("mps", "mps", 1, "auto"),
        ("ddp", "gpu", "auto", "ddp"),
    ],
)
def test_trainer_groups_compose(tmp_path, group, accelerator, devices, strategy):
    trainer = compose_train(tmp_path, f"trainer={group}").trainer
    assert (trainer.accelerator, trainer.devices, trainer.strategy) == (accelerator, devices, strategy)
    assert trainer.precision == "32-true" and trainer.num_nodes == 1


def test_ddp_sim_is_ddp_spawn_over_gloo_on_two_cpu_processes(tmp_path):
    trainer = compose_train(tmp_path, "trainer=ddp_sim").trainer
    assert (trainer.accelerator, trainer.devices, trainer.num_nodes) == ("cpu", 2, 1)
    strategy = instantiate(trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy.process_group_backend == "gloo" and strategy._start_method == "spawn"


@pytest.mark.parametrize("group", ["default", "cpu"])
def test_data_lives_and_batches_arrive_on_the_training_device(tmp_path, group):
    summary, probe = train_few_batches(tmp_path, f"trainer={group}")
    device = expected_device() if group == "default" else "cpu"
    assert probe["root_device"] == probe["data_device"] == probe["batch_device"] == device
    assert summary["test_acc"] is not None


@pytest.mark.parametrize(
    "overrides, precision, logits_dtype, channels_last",
    [
        # tiny's recipe turns channels_last on; these two switch it off to see precision alone
        (["trainer.precision=bf16-mixed", "model.channels_last=false"], "bf16-mixed", "torch.bfloat16", False),
        # fp16 autocast is GPU-only: on a CPU Lightning warns and uses bf16 instead of failing
        (["trainer.precision=16-mixed", "model.channels_last=false"], "bf16-mixed", "torch.bfloat16", False),
        (["++model.channels_last=true"], "32-true", "torch.float32", True),
        (["++model.channels_last=true", "trainer.precision=bf16-mixed"], "bf16-mixed", "torch.bfloat16", True),
    ],
    ids=["bf16-mixed", "16-mixed", "channels_last", "channels_last+bf16"],
)
def test_speed_switches_train_on_cpu(tmp_path, overrides, precision, logits_dtype, channels_last):
    summary, probe = train_few_batches(tmp_path, "trainer=cpu", *overrides)
    assert probe["precision"] == precision and probe["logits_dtype"] == logits_dtype
    assert probe["channels_last"] is channels_last and probe["compiled"] is False
    assert len(probe["losses"]) == 4 and all(math.isfinite(x) for x in probe["losses"])
    # the checkpoint is an ordinary one: it loads into the plain net on the CPU
    model = cnn_lightning.load_model(summary["best_checkpoint"])
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow  # torch.compile's first compilation takes about a minute on 2 cores
def test_compile_trains_on_cpu_and_saves_a_plain_checkpoint(tmp_path):
    summary, probe = train_few_batches(tmp_path, "trainer=cpu", "++model.compile=true")
    assert probe["compiled"] is True and probe["precision"] == "32-true"
    assert all(math.isfinite(x) for x in probe["losses"])
    model = cnn_lightning.load_model(summary["best_checkpoint"])  # no "_orig_mod." in the keys
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without a CUDA GPU")
def test_gpu_group_refuses_to_fall_back_to_the_cpu(tmp_path):
    with pytest.raises(InstantiationException, match="No supported gpu backend"):
        train(compose_train(tmp_path, *FEW_BATCHES, "trainer=gpu"))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_gpu_keeps_the_data_on_the_gpu(tmp_path, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    _, probe = train_few_batches(tmp_path, "trainer=gpu", f"trainer.precision={precision}", "++model.channels_last=true")
    assert probe["data_device"] == probe["batch_device"] == "cuda:0"
    assert probe["precision"] == precision
    assert all(math.isfinite(x) for x in probe["losses"])


@pytest.mark.skipif(not MPS, reason="needs Apple's MPS")
def test_mps_keeps_the_data_on_the_mps_device(tmp_path):
    _, probe = train_few_batches(tmp_path, "trainer=mps")
    assert probe["data_device"] == probe["batch_device"] == "mps:0"
    assert all(math.isfinite(x) for x in probe["losses"])


def test_native_precision_is_bf16_only_where_the_device_computes_it():
    cpu_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_precision("cpu") == ("bf16-mixed" if cpu_bf16 else "32-true")
    assert native_precision("mps") == "32-true"  # bf16 autocast on Apple GPUs is not assumed
    if not CUDA:
        assert native_precision("gpu") == "32-true"  # Lightning then refuses: no GPU
        assert native_precision("auto") == native_precision("cpu") or MPS
    elif torch.cuda.is_bf16_supported():
        assert native_precision("gpu") == native_precision("auto") == "bf16-mixed"


def test_the_speedrun_trains_in_the_native_precision(tmp_path):
    summary, probe = train_few_batches(tmp_path, "experiment=speedrun", "trainer=cpu")
    assert probe["precision"] == native_precision("cpu")
    assert probe["logits_dtype"] == ("torch.bfloat16" if probe["precision"] == "bf16-mixed" else "torch.float32")
    assert all(math.isfinite(x) for x in probe["losses"])
