"""What a net knows of its training digits (``cnn_lightning.knowledge`` through ``Predictor``; no
Qt), on a really trained tiny checkpoint of this module's own and the real MNIST: the neighbours, the
novelty detector against test digits and the project's own non-digits, and the cache beside the
checkpoint (keyed, refused when damaged or foreign, rebuilt)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, read_summary, run_train

from cnn_lightning import knowledge
from cnn_lightning.inference import Predictor
from cnn_lightning.nondigits import KINDS, make_nondigits


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mnist_dir) -> Path:
    """A tiny trained on 250 batches, in a folder of this module's own (its cache lands beside it):
    after the shared fixture's 60 batches the neighbours of only 193 of 200 test digits agreed
    with their label, under the issue's 97%."""
    run_dir = tmp_path_factory.mktemp("knowledge") / "tiny"
    overrides = [o for o in FAST if not o.startswith("trainer.limit_train_batches")]
    result = run_train(*overrides, "trainer.limit_train_batches=250", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    source = Path(read_summary(run_dir)["best_checkpoint"])
    target = run_dir.parent / "tiny.ckpt"
    shutil.copy2(source, target)
    return target


@pytest.fixture(scope="module")
def predictor(checkpoint, mnist_dir, one_torch_thread) -> Predictor:
    predictor = Predictor.from_checkpoint(checkpoint)
    predictor.data_dir = mnist_dir
    predictor.fitted_knowledge()
    return predictor


def as_input(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0)[None]


def test_the_neighbours_of_test_digits_are_training_digits_of_their_class(predictor, mnist_test, mnist_dir):
    images, labels = mnist_test
    train_idx, val_idx = knowledge.split_indices()
    train_set = set(train_idx.tolist())
    train_images, train_labels = knowledge.read_mnist_train(mnist_dir)
    agree = 0
    for image, label in zip(images[:200], labels[:200], strict=True):
        found = predictor.neighbours(as_input(image), k=8)
        assert len(found) == 8
        similarities = [n.similarity for n in found]
        assert similarities == sorted(similarities, reverse=True) and similarities[0] <= 1.0001
        for n in found:
            assert n.index in train_set  # never a validation or test image
            assert n.label == train_labels[n.index] and np.array_equal(n.image, train_images[n.index])
        votes = np.bincount([n.label for n in found], minlength=10)
        agree += int(votes.argmax() == label)
    assert agree / 200 >= 0.97, agree


def test_a_query_is_fast(predictor, mnist_test):
    import time

    x = as_input(mnist_test[0][1])
    predictor.neighbours(x)
    started = time.perf_counter()
    for _ in range(10):
        predictor.neighbours(x)
    assert (time.perf_counter() - started) / 10 < 0.02


def test_novelty_passes_test_digits_and_flags_the_projects_non_digits(predictor, mnist_test):
    images, _ = mnist_test
    fit = predictor.fitted_knowledge()
    digits = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    d_scores = fit.scores(*knowledge.logits_and_features(predictor.model, digits))
    flagged_digits = float((d_scores > fit.threshold()).float().mean())
    assert flagged_digits <= 0.06, flagged_digits
    odd = make_nondigits(seed=0, per_kind=40, digits=images[:40])
    assert set(odd.kinds) == set(KINDS) and odd.kinds.count("letter") >= 50
    o_scores = fit.scores(*knowledge.logits_and_features(predictor.model, odd.images))
    flagged = float((o_scores > fit.threshold()).float().mean())
    assert flagged > 0.5, (fit.detector, flagged)
    # Predictor.novelty is the same score, one image at a time
    for i in (0, 1, len(odd.kinds) - 1):
        verdict = predictor.novelty(odd.images[i])
        assert verdict.score == pytest.approx(float(o_scores[i]), rel=1e-4, abs=1e-5)
        assert verdict.is_digit == (verdict.score <= fit.threshold())
    assert predictor.novelty(as_input(images[0])).is_digit == bool(d_scores[0] <= fit.threshold())


def test_the_fit_is_cached_beside_the_checkpoint_and_refused_when_foreign_or_damaged(predictor, checkpoint, mnist_dir):
    cache = knowledge.cache_path(checkpoint)
    assert cache.is_file()
    key = knowledge.checkpoint_key(checkpoint)
    fit = knowledge.read_cache(cache, key)
    assert fit.features.dtype == torch.float16 and fit.features.shape[0] == 55_000
    with pytest.raises(knowledge.KnowledgeError, match="another"):
        knowledge.read_cache(cache, key + "x")
    state = torch.load(cache, weights_only=True)
    for name, bad in (("features", state["features"].float()), ("thresholds", torch.full((4,), float("nan"))),
                      ("indices", state["indices"] + 60_000), ("precision", state["precision"][:-1])):
        with pytest.raises(knowledge.KnowledgeError):
            knowledge.Knowledge.from_state({**state, name: bad}, key)
    original = cache.read_bytes()
    try:
        cache.write_bytes(original[: len(original) // 2])  # truncated: refused, fitted again, rewritten
        with pytest.raises(knowledge.KnowledgeError):
            knowledge.read_cache(cache, key)
        refit = knowledge.load_or_fit(predictor.model, checkpoint, mnist_dir)
        assert knowledge.read_cache(cache, key).detector == refit.detector
        os.utime(checkpoint, ns=(1, 1))  # the checkpoint changed: its key too, the old fit is stale
        with pytest.raises(knowledge.KnowledgeError):
            knowledge.read_cache(cache, knowledge.checkpoint_key(checkpoint))
    finally:
        cache.write_bytes(original)
