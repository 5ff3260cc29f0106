"""How often a net takes a non-digit for a digit, before and after the novelty detector.

    python benchmarks/novelty.py --checkpoint PATH [--checkpoint PATH ...] [--threads 1]

For each checkpoint: fit (or read from its cache) the detectors of ``cnn_lightning.knowledge``;
then, on the 10,000 test digits and on the project's own non-digits
(``cnn_lightning.nondigits.make_nondigits``, seed 0: letters and symbols from every font Pillow
loads, random strokes, noise, dots, inverted test digits), report per detector the false alarms
(test digits flagged), the share of non-digits flagged and the AUROC; and, before any detector,
the share of non-digits read as a digit with >= 90% confidence ("fooled"), and after the kept
detector (read with >= 90% and not flagged).

Writes ``benchmarks/results/novelty.json`` (``--results-dir``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, add_threads_option, start, write_result  # puts ROOT on sys.path

from cnn_lightning.inference import Predictor
from cnn_lightning.knowledge import DETECTORS, auroc, logits_and_features
from cnn_lightning.mnist_files import prepare_mnist, raw_dir
from cnn_lightning.nondigits import KINDS, make_nondigits

CONFIDENT = 0.9


def test_digits(data_dir: Path) -> tuple[torch.Tensor, np.ndarray]:
    """The 10,000 test images as float (N, 1, 28, 28) in [0, 1], and their labels."""
    prepare_mnist(data_dir, download=False)
    raw = raw_dir(data_dir)
    images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    labels = np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8).astype(np.int64)
    return torch.from_numpy(images.astype(np.float32) / 255.0), labels


def measure(predictor: Predictor, digits: torch.Tensor, labels: np.ndarray, odd) -> dict:
    fit = predictor.fitted_knowledge()
    model = predictor.model
    d_logits, d_features = logits_and_features(model, digits)
    o_logits, o_features = logits_and_features(model, odd.images)
    kinds = np.array(odd.kinds)
    detectors = {}
    for detector in DETECTORS:
        threshold = fit.threshold(detector)
        d_scores = fit.scores(d_logits, d_features, detector).numpy()
        o_scores = fit.scores(o_logits, o_features, detector).numpy()
        flagged = o_scores > threshold
        detectors[detector] = {
            "test_digits_flagged": float((d_scores > threshold).mean()),
            "nondigits_flagged": float(flagged.mean()),
            "nondigits_flagged_by_kind": {k: float(flagged[kinds == k].mean()) for k in KINDS if (kinds == k).any()},
            "auroc": auroc(d_scores, o_scores),
            "auroc_at_fit": float(fit.aurocs[DETECTORS.index(detector)]),
        }
    confident = torch.softmax(o_logits, dim=1).max(dim=1).values.numpy() >= CONFIDENT
    kept = fit.threshold()
    passed = fit.scores(o_logits, o_features).numpy() <= kept
    accuracy = float((d_logits.argmax(dim=1).numpy() == labels).mean())
    return {
        "checkpoint": str(predictor.checkpoint),
        "test_accuracy": accuracy,
        "detector_kept": fit.detector,
        "nondigits": len(odd.kinds),
        "nondigits_by_kind": {k: int((kinds == k).sum()) for k in KINDS},
        "fooled_before": float(confident.mean()),
        "fooled_after": float((confident & passed).mean()),
        "detectors": detectors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    add_threads_option(parser)
    args = parser.parse_args()
    info = start(args)
    digits, labels = test_digits(args.data_dir)
    odd = make_nondigits(seed=0, per_kind=40, digits=(digits[:40, 0].numpy()))
    results = []
    for path in args.checkpoint:
        predictor = Predictor.from_checkpoint(path)
        result = measure(predictor, digits, labels, odd)
        results.append({"net": predictor.architecture, **result})
        print(f"{predictor.architecture}: test accuracy {result['test_accuracy']:.2%}, fooled {result['fooled_before']:.0%}"
              f" -> {result['fooled_after']:.0%} ({result['detector_kept']})")
        for name, d in result["detectors"].items():
            print(f"  {name:12s} false alarms {d['test_digits_flagged']:.1%}  non-digits flagged "
                  f"{d['nondigits_flagged']:.0%}  AUROC {d['auroc']:.3f}")
    out = write_result("novelty", {"confident": CONFIDENT, "results": results}, info, args.results_dir)
    print(out)


if __name__ == "__main__":
    main()
