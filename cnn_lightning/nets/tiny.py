"""The tiny net: under 8,000 parameters, in the style of seed 001.

3x3 conv blocks grow the receptive field; a transition block (1x1 conv to squeeze channels, then
max pool) comes early because MNIST's border is empty; no transition near the end; BatchNorm and
a little dropout after every 3x3 conv; global average pooling instead of a large FC head.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnn_lightning.nets.layers import conv_bn_relu


class TinyNet(nn.Module):
    def __init__(
        self,
        c1: int = 8,
        c2: int = 16,
        c3: int = 12,
        c4: int = 16,
        c5: int = 16,
        dropout: float = 0.05,
        num_classes: int = 10,
    ):
        super().__init__()
        # size, receptive field (RF) after each layer for a 28x28 input
        self.features = nn.Sequential(OrderedDict([
            ("conv1", conv_bn_relu(1, c1, dropout=dropout)),   # 26x26, RF 3
            ("conv2", conv_bn_relu(c1, c2, dropout=dropout)),  # 24x24, RF 5
            ("squeeze", nn.Conv2d(c2, c1, 1, bias=False)),     # 24x24, RF 5  (transition)
            ("pool", nn.MaxPool2d(2)),                         # 12x12, RF 6
            ("conv3", conv_bn_relu(c1, c3, dropout=dropout)),  # 10x10, RF 10
            ("conv4", conv_bn_relu(c3, c4, dropout=dropout)),  # 8x8,   RF 14
            ("conv5", conv_bn_relu(c4, c5, dropout=dropout)),  # 6x6,   RF 18
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("gap", nn.AdaptiveAvgPool2d(1)),                  # 1x1, sees the whole digit
            ("fc", nn.Conv2d(c5, num_classes, 1)),
            ("flatten", nn.Flatten()),
        ]))

    def forward(self, x):
        return self.classifier(self.features(x))
