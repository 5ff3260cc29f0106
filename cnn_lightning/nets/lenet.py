"""LeNet-5 (LeCun et al. 1998), as seeds 002 and 004 lay it out for 28x28 MNIST.

    layer     kernel / units          output (28x28 input)
    conv1     5x5, 6, padding 2       6 x 28 x 28
    pool1     2x2, stride 2           6 x 14 x 14
    conv2     5x5, 16                 16 x 10 x 10
    pool2     2x2, stride 2           16 x 5 x 5
    fc1       400 -> 120
    fc2       120 -> 84
    fc3       84 -> 10

The modern form (the default) uses ReLU and max pooling; the classic form of the paper and the
seeds uses a squashing activation (sigmoid or tanh) and average pooling. ``pool_first=True``
puts each max pool before its activation (the same function, cheaper). ``batch_norm=True`` puts
a BatchNorm after each conv (before its activation), which the paper predates: it lets a short,
high-learning-rate run converge (conf/experiment/speedrun.yaml).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnn_lightning.nets.layers import activation as make_activation
from cnn_lightning.nets.layers import output_size, pool


class LeNet5(nn.Module):
    def __init__(
        self,
        c1: int = 6,
        c2: int = 16,
        kernel_size: int = 5,
        padding: int = 2,            # on conv1 only: keeps 28x28 so conv2 sees 14x14 as in the paper
        pool_type: str = "max",      # "max" (modern) or "avg" (classic)
        pool_size: int = 2,
        pool_stride: int = 2,
        activation: str = "relu",    # "relu" (modern), "tanh" or "sigmoid" (classic)
        fc1: int = 120,
        fc2: int = 84,
        dropout: float = 0.0,        # before fc2 and fc3; the paper has none
        batch_norm: bool = False,    # BatchNorm after conv1 and conv2; the paper has none
        pool_first: bool = False,    # each max pool before its activation: the same function, faster
        num_classes: int = 10,
        input_size: int = 28,
    ):
        super().__init__()
        features = [
            ("conv1", nn.Conv2d(1, c1, kernel_size, padding=padding, bias=not batch_norm)),
            ("bn1", nn.BatchNorm2d(c1)),
            ("act1", make_activation(activation)),
            ("pool1", pool(pool_type, pool_size, pool_stride)),
            ("conv2", nn.Conv2d(c1, c2, kernel_size, bias=not batch_norm)),
            ("bn2", nn.BatchNorm2d(c2)),
            ("act2", make_activation(activation)),
            ("pool2", pool(pool_type, pool_size, pool_stride)),
        ]
        if not batch_norm:  # the paper's layers only
            features = [(name, layer) for name, layer in features if not name.startswith("bn")]
        if pool_first:
            # A max pool commutes with any increasing activation (ReLU, tanh, sigmoid): pooling
            # first computes the same function and the activation touches a quarter of the
            # elements (1.17x the speedrun net's training step on a CPU). Off by default so that
            # each conv's map is shown after its activation, as in the paper.
            if pool_type != "max":
                raise ValueError(f"pool_first needs max pooling: {pool_type!r} pooling does not commute with the activation")
            for i in range(len(features) - 1):
                if features[i][0].startswith("act") and features[i + 1][0].startswith("pool"):
                    features[i], features[i + 1] = features[i + 1], features[i]
        self.features = nn.Sequential(OrderedDict(features))
        # Seed 004's arithmetic gives the flattened size: 28 -> 28 -> 14 -> 10 -> 5, 16*5*5 = 400.
        size = output_size(input_size, kernel_size, padding=padding)
        size = output_size(size, pool_size, pool_stride)
        size = output_size(size, kernel_size)
        size = output_size(size, pool_size, pool_stride)
        head = [
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(c2 * size * size, fc1)),
            ("act3", make_activation(activation)),
            ("drop1", nn.Dropout(dropout)),
            ("fc2", nn.Linear(fc1, fc2)),
            ("act4", make_activation(activation)),
            ("drop2", nn.Dropout(dropout)),
            ("fc3", nn.Linear(fc2, num_classes)),
        ]
        if dropout == 0:  # no do-nothing layers in the summary
            head = [(name, layer) for name, layer in head if not name.startswith("drop")]
        self.classifier = nn.Sequential(OrderedDict(head))

    def forward(self, x):
        return self.classifier(self.features(x))
