"""Knowledge distillation (``model.distill``): frozen teachers outside the student, the loss as
the formula says, an ensemble's mean softmax, one-line errors, and a real ``teacher=best`` run.

Teachers are real checkpoints of short real fits on real MNIST; the fits here are a few batches.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, read_summary, run_train
from lightning.pytorch.utilities.model_summary import ModelSummary
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnn_lightning import distill as kd
from cnn_lightning.checkpoints import CheckpointError, load_model
from cnn_lightning.data import MNISTDataModule
from cnn_lightning.module import Classifier

TINY = {"_target_": "cnn_lightning.nets.TinyNet"}
LENET = {"_target_": "cnn_lightning.nets.LeNet5"}
SGD = {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trainer(batches: int = 4, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=batches, limit_val_batches=1,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )


@pytest.fixture(scope="module")
def datamodule(mnist_dir) -> MNISTDataModule:
    dm = MNISTDataModule(str(mnist_dir), batch_size=64, eval_batch_size=500)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, datamodule) -> list[Path]:
    """Two real teacher checkpoints of different nets: a tiny net and a LeNet-5, a few batches each."""
    folder = tmp_path_factory.mktemp("teachers")
    paths = []
    for seed, net in ((1, TINY), (2, LENET)):
        L.seed_everything(seed)
        module = Classifier(name=net["_target_"].rsplit(".", 1)[-1], net=net, optimizer=SGD)
        fitted = trainer(batches=8)
        fitted.fit(module, datamodule=datamodule)
        paths.append(folder / f"teacher{seed}.ckpt")
        fitted.save_checkpoint(paths[-1])
    return paths


@pytest.fixture(scope="module")
def batch(datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of 256 validation digits, as the nets take them: floats in [0, 1]."""
    images, labels = datamodule.splits["val"]
    return images[:256].float() / 255, labels[:256]


def student(teacher=None, seed: int = 0, **distill) -> Classifier:
    torch.manual_seed(seed)
    setting = {"teacher": [str(t) for t in teacher] if isinstance(teacher, list) else str(teacher), **distill}
    return Classifier(name="tiny", net=TINY, optimizer=SGD, distill=setting if teacher else None)


def test_the_teacher_is_frozen_and_outside_the_student(teachers, datamodule, batch, tmp_path):
    own_copy = tmp_path / "teacher.ckpt"  # deleted below: the student's checkpoint must not need it
    shutil.copy(teachers[0], own_copy)
    module = student(own_copy)
    (teacher,) = module.teachers.nets
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fitted = trainer(batches=6)
    fitted.fit(module, datamodule=datamodule)

    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in module.model.state_dict().items())
    plain = student(None)
    assert module.state_dict().keys() == plain.state_dict().keys()  # no teacher tensor in the student
    optimised = {id(p) for group in fitted.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.parameters()}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert ModelSummary(module).total_parameters == ModelSummary(plain).total_parameters
    assert "train/distill_loss" in fitted.logged_metrics

    # Validation is plain cross-entropy: the student's CE on the first validation batch.
    images, labels = datamodule.splits["val"]
    with torch.no_grad():
        ce = F.cross_entropy(module.eval()(images[:500].float() / 255), labels[:500])
    assert torch.isclose(fitted.callback_metrics["val/loss"], ce, atol=1e-5)

    saved = tmp_path / "student.ckpt"
    fitted.save_checkpoint(saved)
    raw = torch.load(saved, map_location="cpu", weights_only=True)
    assert raw["state_dict"].keys() == module.state_dict().keys()
    assert raw["hyper_parameters"]["distill"]["teacher"] == str(own_copy)
    # Resumed from this checkpoint, teacher=best keeps the teacher it names (no runs needed).
    assert kd.resolve({"teacher": "best"}, tmp_path / "no-runs", ckpt_path=saved)["teacher"] == [str(own_copy)]
    own_copy.unlink()
    loaded = load_model(saved)
    with torch.no_grad():
        assert torch.allclose(loaded(batch[0]), module(batch[0]), atol=1e-5)


def test_copies_of_the_student_share_its_teachers(teachers):
    """EMAWeightAveraging deep-copies the student: the copy must not carry teachers of its own."""
    import copy

    module = student(teachers[0])
    assert copy.deepcopy(module).teachers is module.teachers


def test_a_teacher_file_is_read_once_until_it_changes(teachers, tmp_path, monkeypatch):
    """The start-up check, train.py's resolve and the Classifier all ask for the teacher: one read."""
    reads = []

    def counting_load_model(path):
        reads.append(str(path))
        return load_model(path)

    monkeypatch.setattr(kd, "_loaded", {})
    monkeypatch.setattr(kd, "load_model", counting_load_model)
    own_copy = tmp_path / "teacher.ckpt"
    shutil.copy(teachers[0], own_copy)
    for _ in range(2):  # check_train_config, then train()
        resolved = kd.resolve({"teacher": str(own_copy)}, None)
    module = Classifier(name="tiny", net=TINY, optimizer=SGD, distill=resolved)
    assert reads == [str(own_copy)]
    (teacher,) = module.teachers.nets
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())

    shutil.copy(teachers[1], own_copy)  # another net in the same file: read again, not the stale one
    (changed,) = kd.Teachers([own_copy]).nets
    assert reads == [str(own_copy)] * 2
    assert changed is not teacher
    assert [p.shape for p in changed.parameters()] == [p.shape for p in load_model(teachers[1]).parameters()]


def test_gradients_reach_only_the_student(teachers, batch):
    module = student(teachers[0]).train()
    _, loss, distill_loss = module.training_loss(*batch)
    assert distill_loss is not None and distill_loss > 0
    loss.backward()
    assert all(p.grad is not None for p in module.parameters())
    assert any(p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for net in module.teachers.nets for p in net.parameters())


def hand_loss(student_logits, teacher_logits_list, labels, temperature, weight, smoothing=0.0):
    """The formula, written out: (1-a) CE + a T^2 KL(p_teacher || p_student), batch mean."""
    t = temperature
    p_teacher = torch.stack([torch.softmax(z / t, 1) for z in teacher_logits_list]).mean(0)
    log_student = torch.log_softmax(student_logits / t, 1)
    kl = (p_teacher * (p_teacher.log() - log_student)).sum(1).mean()
    return (1 - weight) * F.cross_entropy(student_logits, labels, label_smoothing=smoothing) + weight * t * t * kl


def test_the_temperature_is_applied_as_the_formula_says(teachers, batch):
    images, labels = batch
    with torch.no_grad():
        teacher_logits = load_model(teachers[0])(images)  # the teacher loaded independently
    soft_targets = {}
    for t in (1.0, 4.0):
        module = student(teachers[0], temperature=t, weight=0.7).eval()  # same seed: same student
        with torch.no_grad():
            logits, loss, _ = module.training_loss(images, labels)
        assert torch.allclose(loss, hand_loss(logits, [teacher_logits], labels, t, 0.7), atol=1e-5)
        soft_targets[t] = module.teachers.probs(images, t)
    # The teacher's soft targets are its softmax at T. (The T^2 KL term of two near-uniform nets
    # hardly moves with T, as Hinton et al. note, so the losses above may meet; logits of a
    # confident size, below, show T in the student's term as well.)
    torch.testing.assert_close(soft_targets[4.0], torch.softmax(teacher_logits / 4.0, 1))
    assert (soft_targets[1.0] - soft_targets[4.0]).abs().max() > 1e-2
    generator = torch.Generator().manual_seed(0)
    student_logits, confident_teacher = (5 * torch.randn(8, 10, generator=generator) for _ in range(2))
    terms = {}
    for t in (1.0, 4.0):
        terms[t] = kd.distillation_loss(student_logits, torch.softmax(confident_teacher / t, 1), t)
        hand = hand_loss(student_logits, [confident_teacher], labels[:8], t, 1.0)  # weight 1: the term alone
        torch.testing.assert_close(terms[t], hand)
    assert abs(terms[1.0] - terms[4.0]) > 0.1 * terms[4.0]


def test_weight_zero_is_plain_cross_entropy(teachers, batch):
    images, labels = batch
    module = Classifier(name="tiny", net=TINY, optimizer=SGD, label_smoothing=0.1,
                        distill={"teacher": str(teachers[0]), "weight": 0.0}).eval()
    with torch.no_grad():
        logits, loss, distill_loss = module.training_loss(images, labels)
    assert distill_loss > 0  # computed (and logged), weighted by zero
    assert torch.equal(loss, F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_an_ensemble_teacher_averages_the_softmax_of_its_members(teachers, batch):
    images, labels = batch
    module = student(list(teachers), temperature=2.0, weight=0.5).eval()
    assert len(module.teachers) == 2
    with torch.no_grad():
        members = [load_model(path)(images) for path in teachers]
        mean = (torch.softmax(members[0] / 2, 1) + torch.softmax(members[1] / 2, 1)) / 2
        assert torch.allclose(module.teachers.probs(images, 2.0), mean, atol=1e-6)
        assert not torch.allclose(mean, torch.softmax(members[0] / 2, 1), atol=1e-3)
        logits, loss, _ = module.training_loss(images, labels)
    assert torch.allclose(loss, hand_loss(logits, members, labels, 2.0, 0.5), atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["+model.distill.teacher={teacher}", "+model.distill.temperature=0"],
         "train: model.distill.temperature=0: must be a number in (0, inf)"),
        (["+model.distill.teacher={teacher}", "+model.distill.weight=1.5"],
         "train: model.distill.weight=1.5: must be a number in [0, 1]"),
        (["+model.distill.teacher=[{teacher},{missing}]"],
         "train: model.distill.teacher: {missing}: no such checkpoint file"),
        (["+model.distill.teacher=best", "paths.log_dir={empty}"],
         "train: model.distill.teacher=best: no finished run under {empty}"),
    ],
    ids=["temperature", "weight", "missing-teacher", "best-without-runs"],
)
def test_a_bad_distill_config_is_one_line_from_the_command(overrides, says, teachers, tmp_path):
    values = {"teacher": teachers[0], "missing": tmp_path / "gone.ckpt", "empty": tmp_path / "outputs"}
    (tmp_path / "outputs").mkdir()
    result = run_train(*(o.format(**values) for o in overrides), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(says.format(**values)), result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_teacher_best_distills_from_the_best_finished_run(trained_run, tmp_path):
    """A LeNet-5 student of the best run under paths.log_dir (the conftest's tiny run), not of
    itself: its own directory is under the same root."""
    outputs = trained_run.parent
    teacher = read_summary(trained_run)["best_checkpoint"]
    run_dir = outputs / "student"
    with pytest.raises(CheckpointError, match="no finished run"):  # never the run being trained
        kd.teacher_paths("best", outputs, exclude=trained_run)
    fast = [o for o in FAST if not o.startswith("trainer.limit_train_batches")]
    result = run_train(*fast, "trainer.limit_train_batches=10", "model=lenet", "test=false",
                       "+model.distill.teacher=best", "+model.distill.temperature=2",
                       f"paths.log_dir={outputs}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Distilling from {teacher} (temperature 2, weight 0.5)" in result.stdout + result.stderr
    best = torch.load(read_summary(run_dir)["best_checkpoint"], map_location="cpu", weights_only=True)
    assert best["hyper_parameters"]["distill"] == {"teacher": [teacher], "temperature": 2, "weight": 0.5}
    assert not any("teacher" in key for key in best["state_dict"])
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    (point,) = events.Scalars("train/distill_loss")  # one epoch: its mean
    assert point.value > 0
