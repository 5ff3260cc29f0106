"""How close a training step comes to the machine: images/s and GFLOP/s against a matmul's.

    python benchmarks/throughput.py                         # every net's default recipe + the speedrun
    python benchmarks/throughput.py --configs model=tiny --rounds 7

For each config (Hydra overrides of ``conf/train.yaml``) the net, its batch size, optimizer and
memory layout come from the composed config; a round times ``--steps`` training steps (forward,
cross-entropy, backward, optimizer step) on a fixed batch of real MNIST training images, so data
loading and augmentation are left out. A training step costs about three forward passes, and a
multiply-accumulate is two floating-point operations, so achieved FLOP/s = images/s x 6 x MACs
(the MACs of ``cnn_lightning.summary``: convs and Linears; BatchNorm, activations and pools are
not counted, so the figure is a lower bound). A config whose ``trainer.precision`` is
``bf16-mixed`` runs its steps under bfloat16 autocast, as Lightning does. The peak is a matmul of
1024x1024 matrices on the same threads, in the config's precision (float32, or bfloat16: on a CPU
with AMX that peak is several times float32's, so a bf16 step's share is of the higher peak).
Medians of ``--rounds`` rounds after a warm-up round, with the spread.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import ROOT, add_threads_option, spread, start, write_result
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchvision.datasets import MNIST

from cnn_lightning.checkpoints import build_model
from cnn_lightning.config import register, to_plain
from cnn_lightning.summary import layer_table, totals

CONFIGS = ["model=tiny", "model=micro", "model=lenet", "model=lenet_classic", "model=alexnet_lite", "experiment=speedrun"]


def matmul_gflops(size: int = 1024, repeats: int = 20, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def training_step_rate(cfg, images: torch.Tensor, labels: torch.Tensor, steps: int, rounds: int) -> list[float]:
    """Images per second of ``rounds`` timed rounds (after one warm-up round)."""
    model = build_model(to_plain(cfg.model.net)).train()
    optimizer = instantiate(cfg.model.optimizer, params=model.parameters())
    batch = images[: cfg.data.batch_size].float().div(255)
    target = labels[: cfg.data.batch_size]
    if cfg.model.channels_last:
        model, batch = model.to(memory_format=torch.channels_last), batch.contiguous(memory_format=torch.channels_last)
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    rates = []
    for r in range(rounds + 1):
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(batch), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if r > 0:
            rates.append(steps * len(batch) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="one Hydra override string per config")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    add_threads_option(parser)
    args = parser.parse_args()
    info = start(args)
    register()
    train = MNIST(str(ROOT / "data"), train=True)
    images, labels = train.data[:1024].unsqueeze(1), train.targets[:1024]

    peaks = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        peaks[name] = spread([matmul_gflops(dtype=dtype) for _ in range(args.rounds + 1)][1:])
        print(f"{name} matmul 1024x1024, {torch.get_num_threads()} threads: {peaks[name]['median']:.1f} GFLOP/s "
              f"(spread {peaks[name]['min']:.1f}-{peaks[name]['max']:.1f})")
    print(f"{'config':36s} {'batch':>5s} {'dtype':>8s} {'MACs':>10s} {'images/s':>9s} {'spread':>13s} {'GFLOP/s':>8s} {'of peak':>7s}")
    results = []
    for overrides in args.configs:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides.split(), "paths.output_dir=/tmp/unused"])
        macs = totals(layer_table(build_model(to_plain(cfg.model.net)).net))["macs"]
        rate = spread(training_step_rate(cfg, images, labels, args.steps, args.rounds))
        gflops = rate["median"] * 6 * macs / 1e9
        dtype = "bfloat16" if str(cfg.trainer.precision).startswith("bf16") else "float32"
        peak = peaks[dtype]["median"]
        results.append({"config": overrides, "model": cfg.model.name, "batch_size": cfg.data.batch_size,
                        "precision": str(cfg.trainer.precision), "peak_dtype": dtype,
                        "channels_last": bool(cfg.model.channels_last), "macs_per_image": macs,
                        "images_per_s": {k: round(v) for k, v in rate.items()},
                        "gflops": round(gflops, 2), "fraction_of_peak": round(gflops / peak, 4)})
        print(f"{overrides:36s} {cfg.data.batch_size:5d} {dtype:>8s} {macs:10,d} {rate['median']:9.0f} "
              f"{rate['min']:6.0f}-{rate['max']:<6.0f} {gflops:8.1f} {gflops / peak:7.1%}")
    path = write_result("throughput", {
        "settings": {"rounds": args.rounds, "steps": args.steps, "torch_threads": torch.get_num_threads()},
        "matmul_gflops": {name: {k: round(v, 1) for k, v in p.items()} for name, p in peaks.items()},
        "configs": results,
    }, info)
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
