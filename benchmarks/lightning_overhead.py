"""A Lightning training epoch against a plain PyTorch loop doing the same work.

    python benchmarks/lightning_overhead.py                      # one full epoch each, best of 3
    python benchmarks/lightning_overhead.py --batches 50 --rounds 2  # a quick check

Both sides get the project's data module, the tiny net of conf/model/tiny.yaml with its optimizer
and scheduler, and the default data config (augmentation on the device included), composed from
``conf/`` as the training command composes them. Lightning: a ``Trainer`` fitting the project's
``Classifier`` (metrics and ``self.log`` included) for one epoch, without validation, logger,
checkpoints, progress bar or model summary, i.e. Lightning's own machinery only. Plain loop: the
same batches, ``on_after_batch_transfer`` + augmentation, forward, cross-entropy, the same
torchmetrics accuracy update, backward, optimizer and scheduler steps.

The epoch is timed from its first batch to its end (Trainer set-up, a one-off, is reported
apart). Rounds alternate which side goes first; the best round of each counts (other load only
ever adds time). CPU time of the process is reported too: steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from common import ROOT, add_threads_option, default_device, start, write_result
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate

from cnn_lightning.config import register

GOAL = 0.05  # the goal: Lightning's epoch at most 5% slower


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class EpochTimer(L.Callback):
    def __init__(self, device):
        self.device, self.wall, self.cpu = device, None, None

    def on_train_epoch_start(self, trainer, pl_module):
        sync(self.device)
        self._start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module):
        sync(self.device)
        self.wall = time.perf_counter() - self._start[0]
        self.cpu = time.process_time() - self._start[1]


def compose_config(device: str):
    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", f"trainer.accelerator={device}"])


def lightning_epoch(cfg, batches: int, device: torch.device, seed: int) -> dict:
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    timer = EpochTimer(device)
    start = time.perf_counter()
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, max_epochs=1,
        limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    return {"wall_s": timer.wall, "cpu_s": timer.cpu, "fit_wall_s": time.perf_counter() - start}


def plain_epoch(cfg, batches: int, device: torch.device, seed: int) -> dict:
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model, _recursive_=False)  # for its net and metric objects only
    datamodule.setup()
    datamodule.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in datamodule.splits.items()}
    model, accuracy = module.model.to(device).train(), module.train_acc.to(device)
    optimizer = instantiate(cfg.model.optimizer, params=model.parameters())
    scheduler = None
    if cfg.model.scheduler:
        # as Classifier.configure_optimizers does: the trainer's step estimate, at least 10
        takes_steps = "total_steps" in inspect.signature(get_class(cfg.model.scheduler._target_)).parameters
        extra = {"total_steps": max(batches, 10)} if takes_steps and "total_steps" not in cfg.model.scheduler else {}
        scheduler = instantiate(cfg.model.scheduler, optimizer=optimizer, **extra)
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    label_smoothing = cfg.model.get("label_smoothing", 0.0)
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    loss_sum = torch.zeros((), device=device)
    for step, batch in enumerate(loader):
        if step == batches:
            break
        images, labels = datamodule.on_after_batch_transfer(batch, 0)
        images = datamodule.augment(images)  # what on_after_batch_transfer adds while training
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        accuracy(logits, labels)
        loss_sum += loss.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None and cfg.model.scheduler_interval == "step":
            scheduler.step()
    accuracy.compute()
    sync(device)
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=None, help="batches per epoch (default: a whole epoch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default=default_device())
    add_threads_option(parser)
    args = parser.parse_args()
    info = start(args)
    device = torch.device(args.device)
    cfg = compose_config({"cuda": "gpu"}.get(device.type, device.type))
    epoch_batches = (60_000 - cfg.data.val_size) // cfg.data.batch_size
    batches = min(args.batches or epoch_batches, epoch_batches)
    print(f"tiny net, batch {cfg.data.batch_size}, {batches} batches an epoch, device {device}, "
          f"best of {args.rounds} rounds")

    runs = {"plain": [], "lightning": []}
    for r in range(args.rounds):
        order = ["plain", "lightning"] if r % 2 == 0 else ["lightning", "plain"]
        for side in order:
            fn = plain_epoch if side == "plain" else lightning_epoch
            result = fn(cfg, batches, device, seed=r)
            runs[side].append(result)
            print(f"  round {r + 1}  {side:9s} epoch {result['wall_s']:7.2f} s wall  {result['cpu_s']:7.2f} s CPU")

    best = {side: min(x["wall_s"] for x in runs[side]) for side in runs}
    best_cpu = {side: min(x["cpu_s"] for x in runs[side]) for side in runs}
    overhead = best["lightning"] / best["plain"] - 1
    overhead_cpu = best_cpu["lightning"] / best_cpu["plain"] - 1
    setup = statistics.median(x["fit_wall_s"] - x["wall_s"] for x in runs["lightning"])
    images = batches * cfg.data.batch_size
    print(f"\nplain loop: {best['plain']:.2f} s ({images / best['plain']:.0f} images/s)   "
          f"Lightning: {best['lightning']:.2f} s ({images / best['lightning']:.0f} images/s)")
    print(f"Lightning overhead: {overhead:+.1%} wall, {overhead_cpu:+.1%} CPU time "
          f"(goal <= {GOAL:.0%}: {'met' if overhead <= GOAL else 'NOT met'}); "
          f"Trainer set-up and teardown outside the epoch: {setup:.2f} s once per fit")
    path = write_result("lightning_overhead", {
        "settings": {"batches": batches, "batch_size": cfg.data.batch_size, "device": str(device),
                     "rounds": args.rounds, "precision": cfg.trainer.precision,
                     "model": cfg.model.name, "augment": bool(cfg.data.augment.enabled),
                     "torch_threads": torch.get_num_threads()},
        "plain_epoch_s": round(best["plain"], 3),
        "lightning_epoch_s": round(best["lightning"], 3),
        "overhead_wall": round(overhead, 4),
        "overhead_cpu_time": round(overhead_cpu, 4),
        "lightning_setup_s": round(setup, 2),
        "rounds": {side: [{k: round(v, 3) for k, v in x.items()} for x in runs[side]] for side in runs},
        "goal_overhead": GOAL,
        "goal_met": overhead <= GOAL,
    }, info)
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
