"""The tiny net: under 8,000 parameters, in the style of seed 001.

    block     layers                          output (28x28 input)   RF
    conv1     3x3, 10, BN, ReLU, dropout      10 x 26 x 26            3
    conv2     3x3, 18, BN, ReLU, dropout      18 x 24 x 24            5
    squeeze   1x1, 8            (transition)  8 x 24 x 24             5
    pool      2x2 max, stride 2 (transition)  8 x 12 x 12             6
    conv3     3x3, 16, BN, ReLU, dropout      16 x 10 x 10           10
    conv4     3x3, 16, BN, ReLU, dropout      16 x 8 x 8             14
    conv5     3x3, 16, BN, ReLU, dropout      16 x 6 x 6             18
    gap       global average pool             16 x 1 x 1             28
    fc        1x1, 10                         10

3x3 conv blocks grow the receptive field; the transition block (1x1 conv to squeeze channels,
then pool) comes early because MNIST's border is empty, and there is none near the end; BatchNorm
and a little dropout after every 3x3 conv; global average pooling instead of a large FC head.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnn_lightning.nets.layers import conv_bn_relu, pool


class TinyNet(nn.Module):
    def __init__(
        self,
        c1: int = 10,
        c2: int = 18,
        squeeze: int = 8,            # channels out of the 1x1 transition conv
        c3: int = 16,
        c4: int = 16,
        c5: int = 16,
        kernel_size: int = 3,
        padding: int = 0,            # of every conv block; MNIST's border is empty anyway
        pool_type: str = "max",
        dropout: float = 0.05,
        dropout_from: int = 1,       # the first conv block with dropout (3: none on the large early maps)
        num_classes: int = 10,
    ):
        super().__init__()

        def block(n, cin, cout):
            return conv_bn_relu(cin, cout, kernel_size, padding=padding, dropout=dropout if n >= dropout_from else 0.0)

        self.features = nn.Sequential(OrderedDict([
            ("conv1", block(1, 1, c1)),
            ("conv2", block(2, c1, c2)),
            ("squeeze", nn.Conv2d(c2, squeeze, 1, bias=False)),
            ("pool", pool(pool_type, 2, 2)),
            ("conv3", block(3, squeeze, c3)),
            ("conv4", block(4, c3, c4)),
            ("conv5", block(5, c4, c5)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("gap", nn.AdaptiveAvgPool2d(1)),  # every output sees the whole digit
            ("fc", nn.Conv2d(c5, num_classes, 1)),
            ("flatten", nn.Flatten()),
        ]))

    def forward(self, x):
        return self.classifier(self.features(x))
