"""The project's data pipeline against the conventional one, training the same tiny net.

    python benchmarks/pipeline.py                        # 200 timed batches a setting, best of 3 rounds
    python benchmarks/pipeline.py --batches 50 --rounds 1    # a quick check

Project: MNIST held as one uint8 tensor on the training device; a batch is one indexing op with a
slice of a shuffled permutation (``MNISTDataModule.train_dataloader()``), turned into floats by
``on_after_batch_transfer``; the net starts with a Normalize layer (the project's model).
Conventional: ``torchvision.datasets.MNIST`` with per-image ``ToTensor`` and ``Normalize``
through a shuffling ``DataLoader`` with 0 and 2 worker processes; the bare net.

Both train the tiny net of conf/model/tiny.yaml with its optimizer (no scheduler, no
augmentation: only the input pipeline differs), eager and under ``torch.compile``. Throughput is
images per second over the timed batches, after warm-up batches; every setting keeps its model
and its batch stream across rounds, rounds are interleaved and the best round counts (other load
on a shared machine only ever slows a round). Compilation is timed separately: the first step
of a compiled model, less an ordinary step. By default torch.compile starts from an empty cache
(as a first run does); ``--warm-compile-cache`` keeps the usual on-disk cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# before torch is imported: the compile cache the compiled settings start from
if "--warm-compile-cache" not in sys.argv:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")

import hydra  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import ROOT, add_threads_option, cpu_seconds, default_device, start, tiny_recipe, write_result  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402
from torchvision.datasets import MNIST  # noqa: E402

from cnn_lightning.checkpoints import build_model  # noqa: E402
from cnn_lightning.data import MNISTDataModule  # noqa: E402
from cnn_lightning.nets.layers import MNIST_MEAN, MNIST_STD  # noqa: E402

GOAL = 1.8  # the goal for the project's best setting against the conventional pipeline


def forever(make_iterable):
    """Batches without end: a new epoch (new shuffle) whenever one runs out."""
    epoch = 0
    while True:
        iterable = make_iterable(epoch)
        yield from iterable
        epoch += 1


def project_batches(data_dir: str, batch_size: int, device: torch.device, augment: bool):
    dm = MNISTDataModule(data_dir, batch_size=batch_size)
    dm.setup()
    # What setup() does under a Trainer on an accelerator: the whole split on the device, once.
    dm.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in dm.splits.items()}

    def epoch_batches(epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            images, labels = dm.on_after_batch_transfer(batch, 0)  # uint8 -> float in [0, 1]
            yield (dm.augment(images) if augment else images), labels

    return forever(epoch_batches)


def conventional_batches(data_dir: str, batch_size: int, device: torch.device, workers: int):
    dataset = MNIST(
        data_dir, train=True,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]),
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
    )

    def epoch_batches(epoch):
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    return forever(epoch_batches)


def data_cpu_ms(batches, n: int) -> float:
    """CPU milliseconds (this process and its workers) to produce one batch, no training."""
    for _ in range(3):
        next(batches)
    start = cpu_seconds()
    for _ in range(n):
        next(batches)
    return (cpu_seconds() - start) / n * 1000


class Setting:
    """One pipeline + one model + its optimizer, trained step by step."""

    def __init__(self, name, pipeline, batches, model, recipe, compiled, device):
        self.name, self.pipeline, self.batches, self.compiled = name, pipeline, batches, compiled
        self.model = model.to(device).train()
        self.optimizer = hydra.utils.instantiate(recipe["optimizer"], params=self.model.parameters())
        self.step_fn = torch.compile(self.model) if compiled else self.model
        self.device = device
        self.first_step_s = None
        self.rounds: list[float] = []
        self.cpu_rounds: list[float] = []

    def step(self):
        images, labels = next(self.batches)
        loss = F.cross_entropy(self.step_fn(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return images.shape[0]

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run(self, warmup: int, batches: int) -> float:
        """Images per second over ``batches`` steps after ``warmup`` steps."""
        for i in range(warmup):
            start = time.perf_counter()
            self.step()
            self.sync()
            if self.first_step_s is None and i == 0:
                self.first_step_s = time.perf_counter() - start
        start, cpu_start, images = time.perf_counter(), cpu_seconds(), 0
        for _ in range(batches):
            images += self.step()
        self.sync()
        rate = images / (time.perf_counter() - start)
        self.rounds.append(rate)
        self.cpu_rounds.append(images / (cpu_seconds() - cpu_start))
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per setting and round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches before each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--no-compile", action="store_true", help="eager settings only")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--warm-compile-cache", action="store_true", help="reuse the on-disk compile cache")
    add_threads_option(parser)
    args = parser.parse_args()
    info = start(args)
    device = torch.device(args.device)
    recipe = tiny_recipe()
    data_dir, batch_size = str(ROOT / "data"), recipe["batch_size"]
    net_cls = hydra.utils.get_class(recipe["net"]["_target_"])
    net_kwargs = {k: v for k, v in recipe["net"].items() if k != "_target_"}

    settings = []
    for compiled in [False] if args.no_compile else [False, True]:
        mode = "compiled" if compiled else "eager"
        torch.manual_seed(0)
        settings.append(Setting(
            f"project {mode}", "project", project_batches(data_dir, batch_size, device, augment=False),
            build_model(recipe["net"]), recipe, compiled, device,
        ))
        if not compiled:  # what training really runs by default: random affine on the device
            torch.manual_seed(0)
            settings.append(Setting(
                "project eager + augmentation", "project+augment",
                project_batches(data_dir, batch_size, device, augment=True),
                build_model(recipe["net"]), recipe, compiled, device,
            ))
        for workers in args.workers:
            torch.manual_seed(0)
            settings.append(Setting(
                f"conventional {workers} workers {mode}", f"conventional-{workers}",
                conventional_batches(data_dir, batch_size, device, workers),
                net_cls(**net_kwargs), recipe, compiled, device,
            ))

    # The input pipelines alone: their CPU cost per batch, which bounds the ratio below.
    data_only = {
        "project": project_batches(data_dir, batch_size, device, augment=False),
        "project + augmentation": project_batches(data_dir, batch_size, device, augment=True),
        **{f"conventional {w} workers": conventional_batches(data_dir, batch_size, device, w) for w in args.workers},
    }
    data_ms = {name: round(min(data_cpu_ms(b, args.batches) for _ in range(args.rounds)), 2)
               for name, b in data_only.items()}
    del data_only  # ends the data-only DataLoader workers
    print("CPU ms to produce one batch, no training: "
          + ", ".join(f"{k} {v:.1f}" for k, v in data_ms.items()))

    print(f"tiny net, batch {batch_size}, {recipe['optimizer']['_target_']}, device {device}; "
          f"{args.batches} timed batches after {args.warmup}, best of {args.rounds} rounds")
    for r in range(args.rounds):
        for s in settings:
            rate = s.run(args.warmup, args.batches)
            print(f"  round {r + 1}  {s.name:38s} {rate:9.0f} images/s  {s.cpu_rounds[-1]:7.0f} per CPU-second")

    results = {}
    for s in settings:
        best = max(s.rounds)
        entry = {"images_per_s": round(best, 1), "rounds_images_per_s": [round(x, 1) for x in s.rounds],
                 "images_per_cpu_s": round(max(s.cpu_rounds), 1), "pipeline": s.pipeline, "compiled": s.compiled}
        if s.compiled:
            steady = batch_size / best
            entry["compile_warmup_s"] = round(s.first_step_s - steady, 2)
        results[s.name] = entry

    def best_of(prefix, compiled):
        candidates = [v["images_per_s"] for k, v in results.items()
                      if k.startswith(prefix) and v["compiled"] == compiled and "augmentation" not in k]
        return max(candidates) if candidates else None

    ratios = {}
    for compiled in [False] if args.no_compile else [False, True]:
        mode = "compiled" if compiled else "eager"
        ratios[mode] = round(best_of("project", compiled) / best_of("conventional", compiled), 2)
    project_best = max((k for k in results if k.startswith("project") and "augmentation" not in k),
                       key=lambda k: results[k]["images_per_s"])
    conventional_best = max((k for k in results if k.startswith("conventional")),
                            key=lambda k: results[k]["images_per_s"])
    ratios["best_vs_best"] = round(results[project_best]["images_per_s"] / results[conventional_best]["images_per_s"], 2)

    print(f"\n  {'best round':38s} {'images/s':>9s} {'per CPU-s':>9s}")
    for name, entry in results.items():
        warm = f"   compile warm-up {entry['compile_warmup_s']:.1f} s" if "compile_warmup_s" in entry else ""
        print(f"  {name:38s} {entry['images_per_s']:9.0f} {entry['images_per_cpu_s']:9.0f}{warm}")
    print("  (per CPU-second: images per second of CPU time of this process and its DataLoader workers,\n"
          "   steadier than images/s when other work shares the machine; the first compiled setting\n"
          "   also pays starting the compiler, later ones reuse its in-process and on-disk caches)")
    print("\nproject / best conventional, same mode: "
          + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if k != "best_vs_best"))
    print(f"best vs best: {project_best} / {conventional_best} = {ratios['best_vs_best']:.2f}x "
          f"(goal >= {GOAL}x: {'met' if ratios['best_vs_best'] >= GOAL else 'NOT met'})")

    path = write_result("pipeline", {
        "settings": {"batch_size": batch_size, "device": str(device), "timed_batches": args.batches,
                     "warmup_batches": args.warmup, "rounds": args.rounds, "net": recipe["net"],
                     "optimizer": recipe["optimizer"], "compile_cache": "warm" if args.warm_compile_cache else "cold",
                     "torch_threads": torch.get_num_threads()},
        "results": results,
        "data_only_cpu_ms_per_batch": data_ms,
        "ratios": ratios,
        "best": {"project": project_best, "conventional": conventional_best},
        "goal_best_vs_best": GOAL,
        "goal_met": ratios["best_vs_best"] >= GOAL,
    }, info)
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
