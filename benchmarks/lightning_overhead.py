"""A Lightning training epoch against a plain PyTorch loop doing the same work.

    python benchmarks/lightning_overhead.py                    # 5 measured rounds of a full epoch each
    python benchmarks/lightning_overhead.py --rounds 2         # a quick check
    python benchmarks/lightning_overhead.py --batches 100      # shorter epochs
    python benchmarks/lightning_overhead.py experiment=speedrun  # another config (Hydra overrides)

Both sides get the project's data module, the tiny net of conf/model/tiny.yaml with its optimizer
and scheduler, and the default data config (augmentation included), composed from ``conf/`` as
the training command composes them, on the same seed, batch order and torch threads (torch's
default unless ``--threads``). Lightning: a ``Trainer`` fitting the project's ``Classifier``
(metrics and ``self.log`` included) for one epoch, without validation, logger, checkpoints,
progress bar or model summary, i.e. Lightning's own machinery only. Plain loop: the same batches,
``on_after_batch_transfer`` + augmentation, forward, cross-entropy, the same torchmetrics accuracy
update, backward, optimizer and scheduler steps.

The epoch is timed from its first batch to its end (Trainer set-up, a one-off, is reported apart).
The sides alternate, plain then Lightning, for a warm-up pair that is discarded and then
``--rounds`` measured pairs; the overhead is the ratio of the two medians, with the spread
(min-max) of each side and the median of the per-pair ratios beside it. A shared or busy machine
makes every round slower, so take the figures on an idle one (the load average is recorded).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from common import ROOT, add_threads_option, default_device, spread, start, write_result
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from timing import EpochTimer, sync

from cnn_lightning.config import register
from cnn_lightning.console import quiet_libraries

quiet_libraries()
GOAL = 0.05  # the goal: Lightning's epoch at most 5% slower


def compose_config(device: str, overrides: list[str]):
    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", f"trainer.accelerator={device}", *overrides])


def lightning_epoch(cfg, batches: int, device: torch.device, seed: int) -> dict:
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    timer = EpochTimer(device=device)
    start = time.perf_counter()
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, max_epochs=1,
        limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    epoch = timer.epochs[-1]
    return {"wall_s": epoch["seconds"], "cpu_s": epoch["cpu_seconds"], "fit_wall_s": time.perf_counter() - start}


def plain_epoch(cfg, batches: int, device: torch.device, seed: int) -> dict:
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model, _recursive_=False)  # for its net and metric objects only
    datamodule.setup()
    datamodule.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in datamodule.splits.items()}
    model, accuracy = module.model.to(device).train(), module.train_acc.to(device)
    memory_format = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # as Classifier.configure_model does
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
    bf16 = str(cfg.trainer.precision).startswith("bf16")  # Lightning's bf16-mixed: autocast around the step
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    loss_sum = torch.zeros((), device=device)
    for step, batch in enumerate(loader):
        if step == batches:
            break
        images, labels = datamodule.on_after_batch_transfer(batch, 0)
        images = datamodule.augment(images)  # what on_after_batch_transfer adds while training
        images = images.contiguous(memory_format=memory_format)  # as Classifier.forward does
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        accuracy.update(logits, labels)  # as Classifier.training_step does
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
    parser.add_argument("--rounds", type=int, default=5, help="measured (plain, Lightning) pairs after the warm-up")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: the tiny default recipe)")
    add_threads_option(parser)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    info = start(args)
    device = torch.device(args.device)
    cfg = compose_config({"cuda": "gpu"}.get(device.type, device.type), args.overrides)
    epoch_batches = (60_000 - cfg.data.val_size) // cfg.data.batch_size
    batches = min(args.batches or epoch_batches, epoch_batches)
    print(f"{cfg.model.name} net ({' '.join(args.overrides) or 'default recipe'}), {cfg.trainer.precision}, "
          f"batch {cfg.data.batch_size}, {batches} batches an epoch, device {device}, "
          f"{torch.get_num_threads()} torch threads; 1 warm-up pair + {args.rounds} measured pairs")

    runs = {"plain": [], "lightning": []}
    for r in range(args.rounds + 1):
        label = "warm-up" if r == 0 else f"round {r}"
        for side, epoch in (("plain", plain_epoch), ("lightning", lightning_epoch)):
            result = epoch(cfg, batches, device, seed=r)
            if r > 0:
                runs[side].append(result)
            print(f"  {label:8s} {side:9s} epoch {result['wall_s']:7.2f} s wall  {result['cpu_s']:7.2f} s CPU")

    wall = {side: spread([x["wall_s"] for x in runs[side]]) for side in runs}
    cpu = {side: spread([x["cpu_s"] for x in runs[side]]) for side in runs}
    overhead = wall["lightning"]["median"] / wall["plain"]["median"] - 1
    overhead_cpu = cpu["lightning"]["median"] / cpu["plain"]["median"] - 1
    pair_ratios = [lt["wall_s"] / p["wall_s"] - 1 for p, lt in zip(runs["plain"], runs["lightning"], strict=True)]
    setup = statistics.median(x["fit_wall_s"] - x["wall_s"] for x in runs["lightning"])
    images = batches * cfg.data.batch_size
    for side in ("plain", "lightning"):
        w = wall[side]
        print(f"{side:9s}: median {w['median']:.2f} s ({images / w['median']:.0f} images/s), "
              f"spread {w['min']:.2f}-{w['max']:.2f} s")
    print(f"Lightning overhead: {overhead:+.1%} (median of {args.rounds} rounds, spread "
          f"{wall['plain']['min']:.2f}-{wall['plain']['max']:.2f} s plain, "
          f"{wall['lightning']['min']:.2f}-{wall['lightning']['max']:.2f} s Lightning; "
          f"per-pair median {statistics.median(pair_ratios):+.1%}; CPU time {overhead_cpu:+.1%}; "
          f"goal <= {GOAL:.0%}: {'met' if overhead <= GOAL else 'NOT met'})")
    print(f"Trainer set-up and teardown outside the epoch: {setup:.2f} s once per fit")
    # one file per round count, so that a --rounds 2 check does not overwrite the --rounds 5 figures
    name = "lightning_overhead" if args.rounds == 5 else f"lightning_overhead_rounds{args.rounds}"
    if args.overrides:
        name += "_" + "_".join(o.lstrip("+~").replace("=", "-").replace("/", "-") for o in args.overrides)
    path = write_result(name, {
        "settings": {"batches": batches, "batch_size": cfg.data.batch_size, "device": str(device),
                     "rounds": args.rounds, "warmup_pairs_discarded": 1, "precision": cfg.trainer.precision,
                     "model": cfg.model.name, "augment": bool(cfg.data.augment.enabled),
                     "torch_threads": torch.get_num_threads(), "overrides": args.overrides},
        "plain_epoch_s": {k: round(v, 3) for k, v in wall["plain"].items()},
        "lightning_epoch_s": {k: round(v, 3) for k, v in wall["lightning"].items()},
        "overhead_wall_median": round(overhead, 4),
        "overhead_wall_per_pair": [round(x, 4) for x in pair_ratios],
        "overhead_cpu_time_median": round(overhead_cpu, 4),
        "lightning_setup_s": round(setup, 2),
        "rounds": {side: [{k: round(v, 3) for k, v in x.items()} for x in runs[side]] for side in runs},
        "goal_overhead": GOAL,
        "goal_met": overhead <= GOAL,
    }, info)
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
