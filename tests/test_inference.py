"""MNIST-style preprocessing, image files, feature maps, receptive fields and checkpoint lookup
(``cnn_lightning.inference``: no Qt). Real MNIST digits and a real trained checkpoint."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import read_summary, run_train
from PIL import Image
from torch import nn

import cnn_lightning
from cnn_lightning import nets
from cnn_lightning.checkpoints import best_per_architecture, checkpoint_epoch, record_for_checkpoint
from cnn_lightning.geometry import receptive_fields
from cnn_lightning.images import EmptyImageError, ImageFileError, centre_of_mass, load_image_file, preprocess
from cnn_lightning.inference import FEATURE_LAYERS, Predictor
from cnn_lightning.nets import TinyNet
from cnn_lightning.nets.layers import Normalize


@pytest.fixture(scope="session")
def well_trained(tmp_path_factory, mnist_dir) -> Path:
    """A real short training of the tiny net that is good enough (~95%) for an accuracy comparison
    to mean something: a weaker net sits so close to its decision boundaries that resampling noise
    alone moves its accuracy by a point. 160 batches: about 30 s on a busy 2-core machine."""
    run_dir = tmp_path_factory.mktemp("well_trained") / "tiny"
    result = run_train(
        "trainer.max_epochs=1", "trainer.limit_train_batches=160", "trainer.limit_val_batches=2", "test=false",
        "~callbacks.progress_bar",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return Path(read_summary(run_dir)["best_checkpoint"])


def ink_box(image: np.ndarray, threshold: float = 0.0) -> tuple[int, int]:
    rows = np.flatnonzero((image > threshold).any(axis=1))
    cols = np.flatnonzero((image > threshold).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def place(canvas_shape, digit: np.ndarray, scale: float, rng) -> np.ndarray:
    """``digit`` (uint8 28x28) enlarged by ``scale`` (pixel replication keeps its shape exact) and
    pasted at a random place on a black canvas."""
    big = F.interpolate(torch.from_numpy(digit)[None, None].float(), scale_factor=scale, mode="nearest-exact")
    big = big[0, 0].numpy().astype(np.uint8)
    canvas = np.zeros(canvas_shape, dtype=np.uint8)
    top = rng.integers(0, canvas_shape[0] - big.shape[0] + 1)
    left = rng.integers(0, canvas_shape[1] - big.shape[1] + 1)
    canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    return canvas


# ---- preprocess ---------------------------------------------------------------------------------


def test_preprocess_crops_to_the_ink_and_fits_20x20_keeping_the_aspect_ratio():
    image = np.zeros((600, 400), dtype=np.uint8)
    image[100:400, 250:350] = 255  # 300 x 100 of ink, far off-centre
    x = preprocess(image)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    height, width = ink_box(x[0].numpy())
    assert height == 20  # the longer side fills the 20-pixel box
    assert width == round(100 * 20 / 300)  # 7: the 3:1 aspect ratio is kept
    wide = np.zeros((50, 500), dtype=np.uint8)
    wide[20:30, 100:300] = 200  # 10 x 200: 20 wide, 1 high
    assert ink_box(preprocess(wide)[0].numpy()) == (1, 20)


def test_preprocess_enlarges_a_small_drawing_to_the_20_pixel_box():
    image = np.zeros((100, 100), dtype=np.uint8)
    image[40:45, 50:52] = 255  # 5 x 2
    assert ink_box(preprocess(image)[0].numpy())[0] == 20


@pytest.mark.parametrize("seed", range(6))
def test_preprocess_puts_the_centre_of_mass_at_the_centre(seed):
    rng = np.random.default_rng(seed)
    image = np.zeros((300, 300), dtype=np.float32)
    # A lopsided blob: a thick bar and a small square, so the mass centre is not the box centre.
    top, left = rng.integers(0, 150, size=2)
    image[top : top + 120, left : left + 25] = 1.0
    image[top : top + 20, left + 25 : left + 60] = rng.uniform(0.3, 1.0)
    x = preprocess(image)[0].numpy()
    row, col = centre_of_mass(x)
    assert abs(row - 14.0) <= 0.5 and abs(col - 14.0) <= 0.5


def test_preprocess_centres_real_digits_like_mnist(mnist_test):
    images, _ = mnist_test
    rng = np.random.default_rng(0)
    for digit in images[:50]:
        x = preprocess(place((300, 260), digit, rng.uniform(2, 8), rng))[0].numpy()
        row, col = centre_of_mass(x)
        assert abs(row - 14.0) <= 0.5 and abs(col - 14.0) <= 0.5
        assert max(ink_box(x)) == 20


def test_preprocess_value_range_and_input_types():
    rng = np.random.default_rng(1)
    image = np.zeros((120, 90), dtype=np.uint8)
    image[30:100, 20:60] = rng.integers(0, 256, size=(70, 40))
    x8 = preprocess(image)
    assert float(x8.min()) >= 0.0 and float(x8.max()) <= 1.0 and float(x8.max()) > 0.5
    # uint8, float in [0, 1], float in [0, 255] and a tensor: one result
    for other in (image / 255.0, image.astype(np.float64), torch.from_numpy(image)):
        torch.testing.assert_close(preprocess(other), x8, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros((3, 28, 28)))


def test_preprocess_is_indifferent_to_where_the_digit_is(mnist_test):
    images, _ = mnist_test
    digit = images[7]
    a = np.zeros((200, 200), dtype=np.uint8)
    b = np.zeros((400, 300), dtype=np.uint8)
    a[10:38, 150:178] = digit
    b[300:328, 20:48] = digit
    torch.testing.assert_close(preprocess(a), preprocess(b), atol=0, rtol=0)


@pytest.mark.parametrize("blank", [
    np.zeros((280, 280), dtype=np.uint8),
    np.zeros((28, 28), dtype=np.float32),
    np.full((50, 50), 0.05, dtype=np.float32),  # faint noise below the ink threshold
])
def test_a_blank_image_raises_empty_image_error(blank):
    with pytest.raises(EmptyImageError, match="draw a digit"):
        preprocess(blank)


def test_mnist_digits_drawn_large_elsewhere_keep_the_checkpoints_accuracy(well_trained, mnist_test):
    """500 real test digits, enlarged 3-10x and put at random places on a 400x400 canvas, through
    ``preprocess``: accuracy within 1 point of the same net on the same digits as they are."""
    images, labels = mnist_test
    images, labels = images[:500], labels[:500]
    model = cnn_lightning.load_model(well_trained)
    rng = np.random.default_rng(2024)
    drawn = torch.stack([preprocess(place((400, 400), d, rng.uniform(3, 10), rng)) for d in images])
    with torch.no_grad():
        as_is = (model(torch.from_numpy(images)[:, None].float() / 255).argmax(1).numpy() == labels).mean()
        through = (model(drawn).argmax(1).numpy() == labels).mean()
    assert as_is > 0.93, f"the checkpoint is too weak for this test: {as_is:.1%}"
    assert abs(through - as_is) <= 0.01, f"as-is {as_is:.1%}, drawn and preprocessed {through:.1%}"


# ---- image files --------------------------------------------------------------------------------


def test_image_files_become_ink_on_black(tmp_path, mnist_test):
    digit = mnist_test[0][0]
    big = np.kron(digit, np.ones((6, 6), dtype=np.uint8))  # 168 x 168
    expected = preprocess(big)
    # dark ink on white paper, in colour
    paper = np.stack([255 - big] * 3, axis=-1)
    Image.fromarray(paper).save(tmp_path / "paper.jpg", quality=95)
    Image.fromarray(paper).save(tmp_path / "paper.png")
    # black ink on a transparent background
    rgba = np.zeros((*big.shape, 4), dtype=np.uint8)
    rgba[..., 3] = big
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    # white ink on black, 16-bit
    Image.fromarray(big.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name, tolerance in (("paper.png", 0.02), ("transparent.png", 0.02), ("deep.png", 0.02), ("paper.jpg", 0.05)):
        ink = load_image_file(tmp_path / name)
        assert ink.shape == big.shape and ink.dtype == np.float32, name
        assert ink.min() >= 0 and ink.max() == pytest.approx(1.0), name
        assert np.median(ink) < 0.05, f"{name}: background should be dark"
        assert float((preprocess(ink) - expected).abs().mean()) < tolerance, name


def test_unusable_image_files_give_a_clear_error(tmp_path):
    good = tmp_path / "digit.png"
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    huge = tmp_path / "huge.png"
    Image.new("L", (7000, 7000)).save(huge)  # 49 megapixels: a few KB on disk, 49 MB decoded
    cases = {
        tmp_path / "missing.png": "cannot read",
        tmp_path: "not a file",
        truncated: "truncated",
        text: "not an image",
        huge: "too large",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageFileError, match=reason):
            load_image_file(path)
    with pytest.raises(ImageFileError, match="MB is too large"):
        load_image_file(good, max_bytes=10)


# ---- feature maps and receptive fields ----------------------------------------------------------


def test_feature_maps_cover_every_conv_activation_and_pool(well_trained, mnist_test):
    predictor = Predictor.from_checkpoint(well_trained)
    images, labels = mnist_test
    prediction = predictor.predict(images[0])
    assert prediction.label == labels[0] and not prediction.uncertain
    assert prediction.probabilities.sum() == pytest.approx(1.0)
    expected = [n for n, m in predictor.model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d))]
    assert list(prediction.maps) == expected == predictor.layers
    features = predictor.model.net.features
    assert prediction.maps["net.features.conv1.conv"].shape == (features.conv1.conv.out_channels, 26, 26)
    assert prediction.maps["net.features.pool"].shape == (features.squeeze.out_channels, 12, 12)
    assert (prediction.maps["net.features.conv1.relu"] >= 0).all()
    np.testing.assert_array_equal(prediction.input, preprocess(images[0])[0].numpy())
    name, kernels = predictor.first_conv_kernels()
    assert name == "net.features.conv1.conv"
    np.testing.assert_array_equal(kernels, features.conv1.conv.weight.detach()[:, 0].numpy())


def test_receptive_fields_of_the_tiny_net_match_its_design():
    geometry = receptive_fields(nn.Sequential(TinyNet()))
    sizes = {name.split(".", 2)[-1]: g.size[0] for name, g in geometry.items()}
    # the sizes tiny.py documents layer by layer
    assert sizes["conv1.conv"] == 3 and sizes["conv2.relu"] == 5 and sizes["squeeze"] == 5
    assert sizes["pool"] == 6 and sizes["conv3.conv"] == 10 and sizes["conv4.conv"] == 14
    assert sizes["conv5.relu"] == 18
    assert geometry["0.classifier.gap"].whole
    assert geometry["0.features.pool"].field(11, 11) == (22, 22, 27, 27)
    assert geometry["0.features.conv1.conv"].field(5, 7) == (5, 7, 7, 9)


def test_receptive_fields_are_exactly_the_pixels_a_unit_depends_on():
    """On a linear net (no ReLU: every path counts) with padding, stride, dilation and pooling,
    the input gradient of one unit is non-zero exactly on its computed receptive field."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 5, padding=2), nn.AvgPool2d(2), nn.Conv2d(3, 3, 3, stride=2, padding=1),
        nn.Conv2d(3, 2, 3, dilation=2),
    ).eval()
    geometry = receptive_fields(model)
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n, m in model.named_children()]
    model(x)
    for hook in hooks:
        hook.remove()
    for name in ("0", "1", "2", "3"):
        out = outputs[name]
        for row, col in ((0, 0), (out.shape[2] // 2, out.shape[3] - 1), (out.shape[2] - 1, 1)):
            (grad,) = torch.autograd.grad(out[0, 0, row, col], x, retain_graph=True)
            support = grad[0, 0].abs() > 0
            rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
            assert geometry[name].field(row, col) == (rows[0], cols[0], rows[-1], cols[-1]), (name, row, col)


# ---- checkpoints the app offers -----------------------------------------------------------------


def test_best_checkpoint_per_architecture(tmp_path, well_trained):
    checkpoint = well_trained
    runs = {"lenet": [0.97, 0.99], "tiny": [0.95, 0.98, 0.96], "zeta_net": [0.5]}
    for model, accs in runs.items():
        for i, acc in enumerate(accs):
            run_dir = tmp_path / model / str(i) / "checkpoints"
            run_dir.mkdir(parents=True)
            shutil.copy(checkpoint, run_dir / f"epoch0{i}-val_acc{acc}.ckpt")
            summary = {"model": model, "best_checkpoint": str(run_dir / f"epoch0{i}-val_acc{acc}.ckpt"),
                       "val_acc_best": acc, "test_acc": acc - 0.01, "params": 1000 + i, "epochs": 3}
            (run_dir.parent / "summary.json").write_text(json.dumps(summary))
    best = best_per_architecture(tmp_path)
    assert [(r.model, r.val_acc) for r in best] == [("lenet", 0.99), ("tiny", 0.98), ("zeta_net", 0.5)]
    assert checkpoint_epoch(best[1].checkpoint) == 2  # "epoch01": Lightning counts from 0
    assert record_for_checkpoint(best[1].checkpoint) == best[1]
    assert record_for_checkpoint(tmp_path / "elsewhere.ckpt") is None
    assert best_per_architecture(tmp_path / "nothing-here") == []


def test_a_predictor_refuses_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(cnn_lightning.CheckpointError, match="bad.ckpt"):
        Predictor.from_checkpoint(bad)


@pytest.mark.parametrize("name", nets.__all__)
def test_every_architecture_gets_feature_maps_and_receptive_fields(name):
    """Each net of ``cnn_lightning.nets`` (as load_model builds it, untrained): a map for every
    conv, activation and pool, a receptive field for each, and no unit depending on an input pixel
    outside its receptive field (the input gradient's support lies inside the box)."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(normalize=Normalize(), net=getattr(nets, name)())).eval()
    predictor = Predictor(model)
    assert predictor.architecture == name and predictor.activations
    prediction = predictor.predict(np.pad(np.eye(20, dtype=np.float32), 4))
    assert prediction.probabilities.shape == (10,) and list(prediction.maps) == predictor.layers
    expected = [n for n, m in model.named_modules() if isinstance(m, FEATURE_LAYERS)]
    spatial = [n for n in expected if n in prediction.maps]
    assert spatial and all(n in predictor.geometry for n in spatial)

    outputs = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o.clone())) for n in spatial]
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    model(x)
    for hook in hooks:
        hook.remove()
    for layer in spatial:
        out = outputs[layer]
        row, col = out.shape[2] // 2, out.shape[3] // 2
        (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x, retain_graph=True)
        top, left, bottom, right = predictor.receptive_field(layer, row, col)
        outside = grad[0, 0].abs().clone()
        outside[top : bottom + 1, left : right + 1] = 0
        assert float(outside.max()) == 0.0, f"{name} {layer}: input outside its receptive field matters"
