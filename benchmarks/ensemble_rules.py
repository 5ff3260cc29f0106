"""Ways to combine an ensemble, judged the honest way: validation picks, the test set reports.

    python benchmarks/ensemble_rules.py --runs-dir outputs/benchmarks/records_epyc

The members are the ``--seed`` run of each of ``--models`` under ``--runs-dir`` (the ensemble of
``python -m cnn_lightning.evaluate ensemble=true ensemble_seed=1``). Each rule is scored on the
5,000 validation images and on the 10,000 test images:

- mean of the members' softmax (what ``cnn_lightning.evaluate`` does),
- mean of their log-softmax (a geometric mean: one confident member weighs more),
- test-time augmentation: each member's softmax averaged over the image and its four one-pixel
  shifts, then over the members,
- every subset of the members (mean of softmax), and the one with the best validation accuracy.

Writes ``benchmarks/results/ensemble_rules.json`` (``--results-dir``).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from common import RESULTS, ROOT, add_threads_option, start, write_result  # puts ROOT on sys.path

from cnn_lightning.checkpoints import find_runs, load_model
from cnn_lightning.data import MNISTDataModule
from cnn_lightning.evaluate import predict_proba

SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # (rows, columns); digits sit well inside the border


def shifted_probs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(shifts, N, 10) softmax, as ``cnn_lightning.evaluate`` computes it, of uint8 images
    (N, 1, 28, 28) and of their one-pixel shifts."""
    return torch.stack([predict_proba(model, images.roll(shift, (2, 3)), torch.device("cpu")) for shift in SHIFTS])


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return (scores.argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["tiny", "micro", "lenet", "alexnet_lite"])
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where ensemble_rules.json goes")
    add_threads_option(parser)
    args = parser.parse_args()
    info = start(args)

    runs = {r.model: r for r in reversed(find_runs(args.runs_dir)) if r.seed == args.seed}  # best val last wins
    missing = [m for m in args.models if m not in runs]
    if missing:
        parser.error(f"no seed-{args.seed} run of {', '.join(missing)} under {args.runs_dir}")
    data = MNISTDataModule(str(ROOT / "data"))
    data.prepare_data()
    data.setup("test")

    probs = {split: {} for split in ("val", "test")}  # split -> model -> (shifts, N, 10)
    for name in args.models:
        model = load_model(runs[name].checkpoint)
        for split in probs:
            probs[split][name] = shifted_probs(model, data.splits[split][0])

    def rules(split: str) -> dict[str, float]:
        labels, members = data.splits[split][1], probs[split]
        plain = torch.stack([p[0] for p in members.values()])  # (members, N, 10), unshifted
        scores = {
            "mean of softmax": accuracy(plain.mean(0), labels),
            "mean of log-softmax": accuracy(plain.log().mean(0), labels),
            "mean of softmax, test-time shifts": accuracy(
                torch.stack([p.mean(0) for p in members.values()]).mean(0), labels),
        }
        for name, p in members.items():
            scores[f"{name} alone"] = accuracy(p[0], labels)
            scores[f"{name} alone, test-time shifts"] = accuracy(p.mean(0), labels)
        for size in range(2, len(members)):
            for subset in itertools.combinations(range(len(members)), size):
                names = "+".join(args.models[i] for i in subset)
                scores[f"subset {names}"] = accuracy(plain[list(subset)].mean(0), labels)
        return scores

    val, test = rules("val"), rules("test")
    subsets = [k for k in val if k.startswith("subset ")]  # none with fewer than three members
    chosen_subset = max(subsets, key=lambda k: val[k]) if subsets else None
    print(f"Members (seed {args.seed}): {', '.join(str(runs[m].checkpoint) for m in args.models)}")
    print(f"{'rule':58} {'val acc':>8} {'test acc':>8}")
    for rule in val:
        mark = "  <- best subset on val" if rule == chosen_subset else ""
        print(f"{rule:58} {100 * val[rule]:7.2f}% {100 * test[rule]:7.2f}%{mark}")
    path = write_result("ensemble_rules", {
        "seed": args.seed,
        "members": {m: str(runs[m].checkpoint) for m in args.models},
        "shifts": SHIFTS,
        "val_acc": val,
        "test_acc": test,
        "best_subset_on_val": chosen_subset,
    }, info, args.results_dir)
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
