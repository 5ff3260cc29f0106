"""Saliency through Captum, and the smallest change that makes a net read another digit. No Qt.

Functions of a model (``nn.Module`` taking (N, 1, 28, 28) in [0, 1], giving logits) and one
preprocessed image ``x`` (1, 28, 28). Every baseline is a black image: 0 in [0, 1], which the
net's own ``Normalize`` turns into black in its standardised input space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency
from captum.robust import PGD
from torch import nn

from cnn_lightning.explain import ACTIVATIONS, POINTWISE, _leaves_in_forward_order
from cnn_lightning.geometry import Geometry, receptive_fields
from cnn_lightning.images import MNIST_SIZE

SALIENCY_METHODS = ("occlusion", "gradient", "integrated_gradients", "smoothgrad", "grad_cam")
OCCLUSION_PATCH = 5  # pixels: about a stroke's width in a 28x28 digit
IG_STEPS = 32
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_SIGMA = 24, 0.15  # noise in [0, 1] pixel units
FLIP_STEPS, FLIP_SEARCH = 25, 9  # PGD steps per radius; bisection steps on the radius
FLIP_MAX_L2 = 12.0


class _Probabilities(nn.Module):
    """The model followed by softmax: attributions explain the class probability."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def grad_cam_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """Grad-CAM's layer: the last conv with a spatial output (more than 1x1), taken after the
    BatchNorm and activation that follow it directly (the maps the next block reads)."""
    calls, tensors = _leaves_in_forward_order(model, torch.zeros(1, MNIST_SIZE, MNIST_SIZE))
    convs = [i for i, (name, module) in enumerate(calls)
             if isinstance(module, nn.Conv2d) and tensors[name][1].shape[-1] * tensors[name][1].shape[-2] > 1]
    if not convs:
        raise ValueError("the net has no convolution with a spatial output for Grad-CAM")
    chosen = convs[-1]
    for i in range(convs[-1] + 1, len(calls)):
        if not isinstance(calls[i][1], POINTWISE):
            break
        chosen = i
        if isinstance(calls[i][1], ACTIVATIONS):
            break
    return calls[chosen]


def _place(cam: torch.Tensor, geometry: Geometry | None) -> torch.Tensor:
    """A (1, 1, h, w) map of a layer's units onto the 28x28 input: each unit at the centre of its
    receptive field, bilinear between centres, fading to 0 one step beyond the outermost."""
    h, w = cam.shape[-2:]
    if geometry is None or geometry.whole:
        return LayerAttribution.interpolate(cam, (MNIST_SIZE, MNIST_SIZE), interpolate_mode="bilinear")
    pixels = torch.arange(MNIST_SIZE, dtype=torch.float32)
    axes = []
    for axis, n in ((0, h), (1, w)):
        unit = (pixels - geometry.start[axis]) / geometry.jump[axis]
        axes.append(2 * unit / max(n - 1, 1) - 1)
    rows, cols = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([cols, rows], dim=-1)[None]
    return F.grid_sample(cam, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def saliency(model: nn.Module, x: torch.Tensor, method: str = "occlusion", target: int | None = None) -> np.ndarray:
    """A (28, 28) float32 map of how much each pixel drove class ``target`` (default: the
    predicted class), by Captum.

    ``occlusion``: the mean drop in the class probability over the 5x5 black squares covering the
    pixel (negative where hiding it made the class likelier). ``gradient``: |∂p/∂x|.
    ``integrated_gradients``: (x − 0) times ∂p/∂x averaged along the path from black to ``x``.
    ``smoothgrad``: |∂p/∂x| averaged over noisy copies of ``x``. ``grad_cam``: the last conv
    layer's maps weighted by their mean gradient, ReLU'd, placed on the 28x28 input by each
    unit's receptive-field centre (bilinear between them).
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"saliency method must be one of {', '.join(SALIENCY_METHODS)}, got {method!r}")
    image = x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE).float()
    probabilities = _Probabilities(model).eval()
    if target is None:
        with torch.no_grad():
            target = int(probabilities(image)[0].argmax())
    with torch.enable_grad():
        if method == "occlusion":
            if not image.any():
                return np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)  # nothing to hide
            out = Occlusion(probabilities).attribute(
                image, sliding_window_shapes=(1, OCCLUSION_PATCH, OCCLUSION_PATCH), strides=1, baselines=0.0,
                target=target, perturbations_per_eval=64)
        elif method == "gradient":
            out = Saliency(probabilities).attribute(image, target=target, abs=True)
        elif method == "integrated_gradients":
            out = IntegratedGradients(probabilities).attribute(
                image, baselines=torch.zeros_like(image), target=target, n_steps=IG_STEPS, internal_batch_size=IG_STEPS)
        elif method == "smoothgrad":
            generator = torch.random.fork_rng()  # the noise is seeded: the same drawing, the same map
            with generator:
                torch.manual_seed(0)
                out = NoiseTunnel(Saliency(probabilities)).attribute(
                    image, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, nt_samples_batch_size=SMOOTHGRAD_SAMPLES,
                    stdevs=SMOOTHGRAD_SIGMA, target=target, abs=True)
        else:
            name, layer = grad_cam_layer(model)
            cam = LayerGradCam(probabilities, layer).attribute(image, target=target, relu_attributions=True)
            out = _place(cam.detach().float(), receptive_fields(model).get(name))
    return out.detach()[0, 0].numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# The smallest change that fools it


@dataclass(frozen=True)
class Flip:
    image: np.ndarray  # (1, 28, 28) float32 in [0, 1]: x perturbed
    label: int  # what the net reads in ``image`` (not what it read in x)
    original: int  # what it read in x
    l2: float  # ||image − x||₂ in [0, 1] pixel units
    probability: float  # of ``label`` in ``image``

    @property
    def difference(self) -> np.ndarray:
        """(28, 28): image − x; positive where ink was added."""
        return self.image[0] - self._x

    _x: np.ndarray = None  # (28, 28) the original, for ``difference``


def smallest_flip(model: nn.Module, x: torch.Tensor, steps: int = FLIP_STEPS, search: int = FLIP_SEARCH,
                  max_l2: float = FLIP_MAX_L2) -> Flip | None:
    """The smallest L2 perturbation found that makes the net read another digit: projected
    gradient descent (Captum's ``PGD``, untargeted, pixels kept in [0, 1]) within an L2 ball
    whose radius is bisected; the smallest radius at which it flipped wins. None when even
    ``max_l2`` does not flip it."""
    image = x.reshape(1, 1, MNIST_SIZE, MNIST_SIZE).float().detach()
    model = model.eval()
    with torch.no_grad():
        original = int(model(image).argmax(dim=1))

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the margin of the read class over the best other: pushing it below 0 flips the digit
        others = logits.clone()
        others[torch.arange(len(logits)), target] = -torch.inf
        return others.max(dim=1).values - logits[torch.arange(len(logits)), target]

    pgd = PGD(model, loss_func=loss, lower_bound=0.0, upper_bound=1.0)
    target = torch.tensor([original])

    def attack(radius: float) -> tuple[torch.Tensor, int] | None:
        with torch.enable_grad():
            out = pgd.perturb(image, radius=radius, step_size=2.5 * radius / steps, step_num=steps,
                              target=target, norm="L2").detach().clamp(0, 1)
        with torch.no_grad():
            label = int(model(out).argmax(dim=1))
        return (out, label) if label != original else None

    best = attack(max_l2)
    if best is None:
        return None
    low, high = 0.0, max_l2
    for _ in range(search):
        middle = (low + high) / 2
        found = attack(middle)
        if found is None:
            low = middle
        else:
            best, high = found, middle
    out, label = best
    with torch.no_grad():
        probability = float(torch.softmax(model(out), dim=1)[0, label])
    return Flip(image=out[0].numpy(), label=label, original=original,
                l2=float((out - image).norm()), probability=probability, _x=image[0, 0].numpy())

