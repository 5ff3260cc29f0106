"""Using a trained net on images: feature maps (and, for the app, preprocessing). No Qt here."""

from __future__ import annotations

import torch
from torch import nn

# The layers whose outputs are shown as feature maps: convolutions, activations, pools.
FEATURE_LAYERS = (
    nn.Conv2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.LocalResponseNorm,
)


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``images``; return (logits, {layer name: output (N, C, H, W)}).

    Names are the modules' qualified names (e.g. ``net.features.conv1.relu``), in forward order.
    Outputs are copied as they are produced, so an in-place layer after them cannot alter them.
    """
    maps: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            if output.dim() == 4:
                maps[name] = output.detach().clone()
        return hook

    handles = [
        module.register_forward_hook(keep(name))
        for name, module in model.named_modules()
        if isinstance(module, FEATURE_LAYERS)
    ]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps
