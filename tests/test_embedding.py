"""The Embedding callback: the fixture's real training (default callbacks) leaves the penultimate
features of 2,000 fixed validation digits, their labels and their sprite for TensorBoard's
projector."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnn_lightning.callbacks import Embedding
from cnn_lightning.knowledge import read_mnist_train, split_indices


def test_the_projector_gets_the_penultimate_features_of_2000_validation_digits(trained_run, mnist_dir):
    board = trained_run / "tensorboard"
    config = (board / "projector_config.pbtxt").read_text()
    assert "embedding/penultimate" in config
    (folder,) = [p for p in board.rglob("embedding%2fpenultimate") if p.is_dir()]
    features = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    assert features.shape == (2000, 16)  # tiny: 16 channels into its classifier
    assert np.isfinite(features).all() and (features >= 0).all() and features.std() > 0  # after a ReLU and the pool
    labels = [int(v) for v in (folder / "metadata.tsv").read_text().split()]
    _, val_idx = split_indices()
    images, train_labels = read_mnist_train(mnist_dir)
    assert labels == train_labels[val_idx[:2000].numpy()].tolist()  # the first 2,000 validation digits, in order
    sprite = np.asarray(Image.open(folder / "sprite.png").convert("L"))
    assert sprite.shape == (45 * 28, 45 * 28)  # a 45x45 grid of 28x28 digits
    np.testing.assert_allclose(sprite[:28, :28], images[int(val_idx[0])], atol=1)  # in [0, 1], not standardised


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Embedding(every_n_epochs=0)
