"""The micro net: under 5,000 parameters, with an all-convolutional head (Network in Network,
Lin et al. 2013): the last conv gives one map per digit and their global averages are the logits.

    block     layers                          output (28x28 input)   RF
    conv1     3x3, 10, BN, ReLU               10 x 26 x 26            3
    conv2     3x3, 12, BN, ReLU               12 x 24 x 24            5
    pool      2x2 max, stride 2               12 x 12 x 12            6
    conv3     3x3, 12, BN, ReLU               12 x 10 x 10           10
    conv4     3x3, 12, BN, ReLU               12 x 8 x 8             14
    classes   3x3, 10 (one map per digit)     10 x 6 x 6             18
    gap       global average pool             10

No fully connected layer at all: the head costs a 3x3 conv's weights and nothing more, and its
ten maps show where each digit's evidence lies (the app draws them like any other layer).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnn_lightning.nets.layers import conv_bn_relu, pool


class MicroNet(nn.Module):
    def __init__(
        self,
        c1: int = 10,
        c2: int = 12,
        c3: int = 12,
        c4: int = 12,
        kernel_size: int = 3,
        padding: int = 0,            # of every conv; MNIST's border is empty anyway
        pool_type: str = "max",
        dropout: float = 0.0,
        num_classes: int = 10,
    ):
        super().__init__()

        def block(cin, cout):
            return conv_bn_relu(cin, cout, kernel_size, padding=padding, dropout=dropout)

        self.features = nn.Sequential(OrderedDict([
            ("conv1", block(1, c1)),
            ("conv2", block(c1, c2)),
            ("pool", pool(pool_type, 2, 2)),
            ("conv3", block(c2, c3)),
            ("conv4", block(c3, c4)),
            ("classes", nn.Conv2d(c4, num_classes, kernel_size, padding=padding)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("gap", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
        ]))

    def forward(self, x):
        return self.classifier(self.features(x))
