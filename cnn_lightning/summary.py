"""Per-layer summary of a net: seed 004's size arithmetic and seed 001's receptive field.

    python -m cnn_lightning.summary model=lenet [model.net.padding=0 ...]

For every leaf layer: output shape, trainable parameters, multiply-accumulates (MACs), receptive
field (RF) and jump, and for convs and pools the output-size formula with its numbers filled in.

* Output size (seed 004): conv (W - F + 2P) / S + 1, pool (W - F) / S + 1 (+ 2P if padded),
  rounded down; depth = number of kernels. Shapes come from a real forward pass; the formula is
  shown next to them.
* Receptive field and jump (seed 001): a layer with kernel F (dilated extent), stride S sees
  RF_out = RF_in + (F - 1) * J_in input pixels and moves J_out = J_in * S pixels per step; the
  image itself has RF 1, J 1. A layer that mixes all positions (global pooling, the first Linear
  after Flatten) acts as a kernel as large as its input. RF is the theoretical one: padding can
  make it larger than the image.
* MACs: one sample's multiply-accumulates in convs and Linears (weights only; bias adds,
  BatchNorm, activations and pools are not counted).

RF and jump assume the layers form a chain, run in forward order, as all of ``cnn_lightning.nets``
do; the recurrence is ``cnn_lightning.geometry``'s, the one the app's receptive fields use.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from cnn_lightning.checkpoints import build_model, check_net
from cnn_lightning.config import (
    ConfigError,
    check_model_chosen,
    check_model_node,
    net_config_error,
    project_root,
    register,
    to_plain,
)
from cnn_lightning.geometry import Geometry, pair, sliding_window

SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerRow:
    """One leaf layer of a net, as ``layer_table`` sees it for one input sample."""

    name: str                   # qualified module name, e.g. "features.conv1"
    type: str                   # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension: (C, H, W) or (features,)
    params: int                 # trainable parameters of this layer alone
    macs: int                   # multiply-accumulates for one sample
    rf: int                     # receptive field in input pixels (height; all nets here are square)
    jump: int                   # input pixels between neighbouring outputs
    arithmetic: str = ""        # seed 004's size formula with numbers, for convs and pools


def _size_arithmetic(w: int, f: int, s: int, p: int, d: int, is_pool: bool) -> str:
    extent = d * (f - 1) + 1
    out = (w - extent + 2 * p) // s + 1
    kernel = str(f) if d == 1 else f"{extent}"  # a dilated kernel's extent is what the formula needs
    if is_pool and p == 0:
        return f"({w}-{kernel})/{s}+1 = {out}"
    return f"({w}-{kernel}+2*{p})/{s}+1 = {out}"


def layer_table(net: nn.Module, input_shape: tuple[int, int, int] = (1, 28, 28)) -> list[LayerRow]:
    """The rows of ``net``'s per-layer summary for one input of shape ``input_shape`` (C, H, W).

    Runs one forward pass (in eval mode, without gradients, on the net's device) with hooks on
    every leaf module, in the order they execute; the net's training mode is restored afterwards.
    """
    leaves = {module: name for name, module in net.named_modules() if not list(module.children())}
    calls: list[tuple[str, nn.Module, torch.Size, torch.Size]] = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor) and inputs and isinstance(inputs[0], torch.Tensor):
            calls.append((leaves[module], module, inputs[0].shape[1:], output.shape[1:]))

    handles = [module.register_forward_hook(hook) for module in leaves]
    was_training = net.training
    try:
        parameter = next(net.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()

    rows = []
    geometry = Geometry()  # the image itself: RF 1, jump 1
    spatial = input_shape[1]  # height of the last 2-D map, for a Linear that follows Flatten
    seen: set[nn.Module] = set()
    for name, module, in_shape, out_shape in calls:
        arithmetic = ""
        if isinstance(module, SPATIAL):
            kernel, stride, padding, dilation = sliding_window(module)
            geometry = geometry.through(kernel, stride, padding, dilation)
            arithmetic = _size_arithmetic(in_shape[-2], kernel[0], stride[0], padding[0], dilation[0],
                                          is_pool=not isinstance(module, nn.Conv2d))
        elif isinstance(module, ADAPTIVE):
            w_in, w_out = in_shape[-2], out_shape[-2]
            s = w_in // w_out
            f = w_in - (w_out - 1) * s  # the fixed window that gives the same output size
            geometry = geometry.through((f, f), (s, s))
        elif isinstance(module, nn.Linear) and len(in_shape) == 1 and spatial > 1:
            # every output sees every position of the last map
            geometry = geometry.through((spatial, spatial), (spatial, spatial))
            spatial = 1
        if len(out_shape) == 3:
            spatial = out_shape[-2]
        # A module called twice (a shared activation) owns its parameters only once.
        params = 0 if module in seen else sum(p.numel() for p in module.parameters() if p.requires_grad)
        seen.add(module)
        rows.append(LayerRow(
            name=name, type=type(module).__name__, output_shape=tuple(out_shape), params=params,
            macs=_macs(module, out_shape), rf=geometry.size[0], jump=geometry.jump[0], arithmetic=arithmetic,
        ))
    return rows


def _macs(module: nn.Module, out_shape: torch.Size) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = pair(module.kernel_size)
        return out_shape.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out_shape.numel() * module.in_features
    return 0


def totals(rows: list[LayerRow]) -> dict[str, int]:
    """Trainable parameters and MACs of the whole net, and its final receptive field."""
    return {
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs for r in rows),
        "rf": rows[-1].rf if rows else 1,
    }


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape)


def format_table(rows: list[LayerRow]) -> str:
    """``rows`` as a Markdown table (aligned, so it reads as plain text too) with a totals line."""
    header = ("layer", "type", "output C×H×W", "params", "MACs", "RF", "jump", "size (W-F+2P)/S+1")
    body = [
        (r.name, r.type, _shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}", str(r.rf), str(r.jump),
         r.arithmetic)
        for r in rows
    ]
    total = totals(rows)
    body.append(("**total**", "", "", f"{total['params']:,}", f"{total['macs']:,}", str(total["rf"]), "", ""))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {3, 4, 5, 6}  # numbers align right

    def line(cells):
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def compose_net(overrides: list[str] | None = None) -> tuple[str, nn.Module]:
    """The model name and the bare net (no Normalize) that ``train.yaml`` + ``overrides`` describe."""
    register()
    check_model_chosen(list(overrides or []))
    with initialize_config_dir(config_dir=str(Path(project_root()) / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides or []))
    check_model_node(cfg)
    try:
        check_net(to_plain(cfg.model.net))  # on the meta device: a huge or broken net costs nothing
    except ValueError as err:
        raise net_config_error(err) from None
    return str(cfg.model.name), build_model(to_plain(cfg.model.net)).net


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        name, net = compose_net(argv)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:  # one line, no traceback
        sys.exit("summary: " + " ".join(line.strip() for line in str(err).splitlines() if line.strip()))
    print(f"{name}: {type(net).__name__}, input 1×28×28\n")
    print(format_table(layer_table(net)))


if __name__ == "__main__":
    main()
