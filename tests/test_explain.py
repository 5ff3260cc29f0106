"""What the app explains (``cnn_lightning.explain`` through ``Predictor``; no Qt): one unit's
arithmetic checked against the real layer output of every conv of every net, saliency on real
test digits through a really trained checkpoint, and the robustness probes."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_summary
from torch import nn

from cnn_lightning import attribution, explain, nets
from cnn_lightning.inference import Predictor
from cnn_lightning.mnist_files import raw_dir
from cnn_lightning.nets.layers import Normalize

NET_VARIANTS = {  # every net of cnn_lightning.nets, and the options that change its layers
    "LeNet5": {},
    "LeNet5-classic": {"activation": "sigmoid", "pool_type": "avg"},
    "LeNet5-batchnorm": {"batch_norm": True},
    "AlexNetLite": {},
    "AlexNetLite-lrn": {"lrn": True},
    "TinyNet": {},
    "MicroNet": {},
}


def untrained(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    net = getattr(nets, name.split("-")[0])(**kwargs)
    model = nn.Sequential(OrderedDict(normalize=Normalize(), net=net)).eval()
    for module in model.modules():  # BatchNorm's statistics, as after training, not 0 and 1
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def test_digits(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The first 200 official test images as float (200, 28, 28) in [0, 1], and their labels."""
    raw = raw_dir(mnist_dir)
    images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8).astype(np.int64)
    return images[:200].astype(np.float32) / 255.0, labels[:200]


@pytest.fixture(scope="module")
def trained(trained_run) -> Predictor:
    return Predictor.from_checkpoint(Path(read_summary(trained_run)["best_checkpoint"]))


def layer_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module's real output for ``x``, captured (copied: ReLUs work in place) by hooks."""
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o.detach().clone()))
             for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x.reshape(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return outputs


def units_to_check(shape, rng, count: int = 6):
    """The four corners (where padding bites) and a few random units of a (C, H, W) output."""
    channels, height, width = shape
    units = [(0, 0, 0), (channels - 1, height - 1, width - 1), (0, 0, width - 1), (channels - 1, height - 1, 0)]
    units += [tuple(int(rng.integers(n)) for n in shape) for _ in range(count)]
    return units


def check_units(predictor: Predictor, x: torch.Tensor, rng) -> int:
    model = predictor.model
    outputs = layer_outputs(model, x)
    modules = dict(model.named_modules())
    checked = 0
    for layer in explain.conv_layers(model):
        for channel, row, col in units_to_check(outputs[layer].shape[1:], rng):
            unit = predictor.explain_unit(x, layer, channel, row, col)
            real = float(outputs[layer][0, channel, row, col])
            assert unit.patch.shape == unit.kernel.shape == tuple(modules[layer].weight.shape[1:])
            assert unit.value == pytest.approx(real, abs=1e-6)
            assert abs(float((unit.patch * unit.kernel).sum()) + unit.bias - real) < 1e-4, (layer, channel, row, col)
            assert not unit.patch[:, unit.padded].any(), "padding taps must be zeros"
            for step in unit.steps:  # BatchNorm / activation values are the real ones too
                assert step.value == pytest.approx(float(outputs[step.layer][0, channel, row, col]), abs=1e-6)
            checked += 1
    return checked


@pytest.mark.parametrize("variant", NET_VARIANTS)
def test_unit_arithmetic_equals_every_conv_layers_output(variant, test_digits):
    """Every conv layer of every net, on a real test digit: patch * kernel summed plus bias is what
    the layer computed (its output read by a forward hook), at corners and inside."""
    model = untrained(variant, **NET_VARIANTS[variant])
    predictor = Predictor(model)
    x = torch.from_numpy(test_digits[0][0])[None]
    rng = np.random.default_rng(0)
    assert check_units(predictor, x, rng) >= 10 * len(explain.conv_layers(model))
    conv = explain.conv_layers(model)[0]
    unit = predictor.explain_unit(x, conv, 0, 0, 0)
    if variant.startswith("LeNet5"):  # padding 2 on conv1: the corner unit's first two rows/cols are padding
        assert unit.padded[:2].all() and unit.padded[:, :2].all() and not unit.padded[2:, 2:].any()
        assert unit.activated is not None and unit.steps[-1].kind in ("ReLU", "Sigmoid")
    assert unit.field is not None and unit.field[0] == 0 and unit.field[1] == 0
    assert unit.input_note.startswith("the standardised image")  # the first conv reads Normalize's output
    assert predictor.explain_unit(x, explain.conv_layers(model)[1], 0, 0, 0).input_note == ""


def test_tiny_units_go_through_batchnorm_then_relu(test_digits):
    model = untrained("TinyNet")
    predictor = Predictor(model)
    x = torch.from_numpy(test_digits[0][1])[None]
    outputs = layer_outputs(model, x)
    unit = predictor.explain_unit(x, "net.features.conv2.relu", 3, 10, 12)  # the ReLU's map stands for its conv
    assert unit.layer == "net.features.conv2.conv" and unit.bias == 0.0
    assert [s.kind for s in unit.steps] == ["BatchNorm2d", "ReLU"]
    assert unit.activated == pytest.approx(float(outputs["net.features.conv2.relu"][0, 3, 10, 12]), abs=1e-6)
    assert unit.activated == max(0.0, unit.steps[0].value)


def test_stride_dilation_groups_uneven_kernels_and_same_padding():
    """A net none of ours is, built to exercise what Conv2d allows: stride, dilation, groups,
    rectangular kernels, 'same' padding, no bias; every unit of every layer checked."""
    torch.manual_seed(1)
    model = nn.Sequential(OrderedDict(
        a=nn.Conv2d(1, 4, 3, stride=2, padding=2, dilation=2),
        relu=nn.ReLU(),
        b=nn.Conv2d(4, 6, 3, groups=2, padding="same", dilation=2),
        c=nn.Conv2d(6, 4, (2, 4), stride=(2, 1), padding=(1, 2), bias=False, groups=2),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(4, 10),
    )).eval()
    predictor = Predictor(model)
    x = torch.rand(1, 28, 28)
    outputs = layer_outputs(model, x)
    for layer in ("a", "b", "c"):
        out = outputs[layer][0]
        for channel in range(out.shape[0]):
            for row in range(0, out.shape[1], 3):
                for col in range(0, out.shape[2], 3):
                    unit = predictor.explain_unit(x, layer, channel, row, col)
                    assert abs(unit.total + unit.bias - float(out[channel, row, col])) < 1e-4, (layer, channel, row, col)
    unit = predictor.explain_unit(x, "b", 5, 0, 0)  # group 2 of 2 reads input channels 2 and 3
    assert unit.input_channels == (2, 3) and unit.patch.shape == (2, 3, 3)
    assert unit.input_rows == (-2, 0, 2), "dilation 2 and 'same' padding of 2"
    assert predictor.explain_unit(x, "a", 0, 3, 4).input_rows == (4, 6, 8)  # stride 2, pad 2, dilation 2


def test_bad_units_are_refused_clearly():
    predictor = Predictor(untrained("LeNet5"))
    x = torch.zeros(1, 28, 28)
    with pytest.raises(ValueError, match="not a convolution.*net.features.conv1"):
        predictor.explain_unit(x, "net.classifier.fc1", 0, 0, 0)
    with pytest.raises(IndexError, match="outside"):
        predictor.explain_unit(x, "net.features.conv1", 6, 0, 0)
    with pytest.raises(ValueError, match="occlusion, gradient, integrated_gradients, smoothgrad, grad_cam"):
        predictor.saliency(x, method="lime")
    with pytest.raises(ValueError, match="shift_x"):
        predictor.probe(x, "blur", [0])


MARGINS = {"occlusion": 3.0, "gradient": 1.2, "integrated_gradients": 3.0, "smoothgrad": 1.2, "grad_cam": 1.5}
SHARE = {"grad_cam": 0.8}  # Grad-CAM's map is 6x6 upsampled: near thin strokes the background shares it


@pytest.mark.parametrize("method", attribution.SALIENCY_METHODS)
def test_saliency_favours_the_ink_of_real_test_digits(method, trained, test_digits):
    """A really trained checkpoint on 20 real test digits: the map is finite, (28, 28), and larger
    on the ink than on the background for nearly every digit. Occlusion's margin is wide (about 10x
    on all four trained nets); the gradient's is narrower (1.7x to 6x on trained nets: a pixel next to a stroke
    matters too, since ink there would change the shape)."""
    images, _ = test_digits
    ink_means, background_means = [], []
    for image in images[:20]:
        x = torch.from_numpy(image)[None]
        sal = trained.saliency(x, method=method)
        assert sal.shape == (28, 28) and sal.dtype == np.float32 and np.isfinite(sal).all()
        ink, background = image > 0.5, image == 0
        ink_means.append(float(sal[ink].mean()))
        background_means.append(float(sal[background].mean()))
    ink_means, background_means = np.array(ink_means), np.array(background_means)
    assert (ink_means > background_means).mean() >= SHARE.get(method, 0.9), (ink_means, background_means)
    assert ink_means.mean() > MARGINS[method] * background_means.mean()


def reference_occlusion(model, x, target, patch=5):
    """The app's former hand-written occlusion: the mean probability drop over the squares of
    background centred on each pixel's neighbours (clipped at the border)."""
    image = x.reshape(1, 1, 28, 28)
    with torch.no_grad():
        base = torch.softmax(model(image), 1)[0, target]
        drops = torch.zeros(28, 28)
        for r in range(28):
            for c in range(28):
                hidden = image.clone()
                hidden[0, 0, max(r - 2, 0): r + 3, max(c - 2, 0): c + 3] = 0
                drops[r, c] = base - torch.softmax(model(hidden), 1)[0, target]
    return torch.nn.functional.avg_pool2d(drops[None, None], patch, 1, patch // 2, count_include_pad=False)[0, 0]


def test_captum_occlusion_and_gradient_match_the_former_hand_written_ones(trained, test_digits):
    """Captum's squares stay inside the image, the former ones were clipped at the border: away
    from the border (where MNIST has no ink) the two agree."""
    x = torch.from_numpy(test_digits[0][0])[None]
    target = int(trained.predict_input(x).label)
    ours = trained.saliency(x, "occlusion")
    former = reference_occlusion(trained.model, x, target).numpy()
    inner = (slice(4, 24), slice(4, 24))
    assert np.abs(ours[inner] - former[inner]).max() < 0.02 * max(np.abs(former).max(), 1e-6) + 1e-4
    leaf = x.reshape(1, 1, 28, 28).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.softmax(trained.model(leaf), 1)[0, target], leaf)
    np.testing.assert_allclose(trained.saliency(x, "gradient"), grad[0, 0].abs().numpy(), rtol=1e-4, atol=1e-7)


def test_the_smallest_flip_is_read_as_its_label(trained, test_digits):
    images, _ = test_digits
    for image in images[:5]:
        x = torch.from_numpy(image)[None]
        flip = trained.smallest_flip(x)
        assert flip is not None
        assert flip.image.shape == (1, 28, 28) and flip.image.min() >= 0 and flip.image.max() <= 1
        assert flip.label != trained.predict_input(x).label == flip.original
        assert trained.predict_input(torch.from_numpy(flip.image)).label == flip.label
        assert flip.l2 == pytest.approx(float(np.linalg.norm(flip.image[0] - image)), rel=1e-4)
        assert 0 < flip.l2 < attribution.FLIP_MAX_L2


@pytest.mark.parametrize("kind", explain.PROBES)
def test_a_probe_at_zero_is_the_plain_prediction(kind, trained, test_digits):
    x = torch.from_numpy(test_digits[0][3])[None]
    values = explain.PROBE_RANGES[kind]
    probabilities = trained.probe(x, kind, values)
    assert probabilities.shape == (len(values), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    plain = trained.predict_input(x).probabilities
    assert np.abs(probabilities[list(values).index(0)] - plain).max() < 1e-4
    assert np.abs(trained.probe(x, kind, [0.0])[0] - plain).max() < 1e-4


def test_probe_transforms_move_turn_and_thicken_the_digit(test_digits):
    image = test_digits[0][0]
    x = torch.from_numpy(image)[None]
    right = explain.transform(x, "shift_x", 3)[0].numpy()
    assert np.allclose(right[:, 3:], image[:, :-3], atol=1e-6) and not right[:, :3].any()
    up = explain.transform(x, "shift_y", -2)[0].numpy()
    assert np.allclose(up[:-2], image[2:], atol=1e-6)
    turned = explain.transform(x, "rotate", 90)[0].numpy()  # counter-clockwise, about the centre
    assert np.allclose(turned, np.rot90(image), atol=1e-5)
    thicker = explain.transform(x, "thickness", 1)[0].numpy()
    padded = np.pad(image, 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    assert np.allclose(thicker, windows.max(axis=(2, 3)))
    masses = [float(explain.transform(x, "thickness", t).sum()) for t in (-2, -1, -0.5, 0, 0.5, 1, 2)]
    assert masses == sorted(masses) and masses[0] < masses[3] < masses[-1]


def test_flip_points_are_the_nearest_changes_on_each_side():
    values = [-3, -2, -1, 0, 1, 2, 3]
    labels = [5, 5, 7, 7, 7, 7, 1]
    probabilities = np.eye(10)[labels]
    assert explain.flip_points(values, probabilities) == (-2.0, 3.0)
    assert explain.flip_points(values, np.eye(10)[[7] * 7]) == (None, None)
    with pytest.raises(ValueError, match="include 0"):
        explain.flip_points([1, 2], np.eye(10)[[1, 2]])
