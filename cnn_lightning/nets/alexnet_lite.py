"""AlexNet-lite: AlexNet's pattern (Krizhevsky et al. 2012, seed 004) scaled to 28x28 grey digits.

    layer     kernel / units              output (28x28 input)
    conv1     5x5, 32                     32 x 24 x 24
    pool1     3x3, stride 2 (overlapping) 32 x 11 x 11
    conv2     3x3, 64, padding 1          64 x 11 x 11
    pool2     3x3, stride 2               64 x 5 x 5
    conv3     3x3, 96, padding 1          96 x 5 x 5
    conv4     3x3, 96, padding 1          96 x 5 x 5
    conv5     3x3, 64, padding 1          64 x 5 x 5
    pool3     3x3, stride 2               64 x 2 x 2
    fc1       dropout, 256 -> 512
    fc2       dropout, 512 -> 512
    fc3       512 -> 10

ReLU after every conv and hidden FC layer; local response normalisation after conv1 and conv2
(as in the paper) only when ``lrn`` is set, since the seed calls it "not common anymore".
``batch_norm=True`` puts a BatchNorm after each of the five convs (before its ReLU), the norm
layer that replaced LRN after the paper.
conv1 has no padding: MNIST's border is empty, and 24 leaves the last pool a whole 5x5 to cover.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnn_lightning.nets.layers import output_size, pool


class AlexNetLite(nn.Module):
    def __init__(
        self,
        channels: tuple[int, int, int, int, int] = (32, 64, 96, 96, 64),
        kernel_size: int = 5,         # conv1's larger kernel; conv2-5 are 3x3, padding 1
        stride: int = 1,              # conv1's stride
        padding: int = 0,             # conv1's padding
        pool_type: str = "max",
        pool_size: int = 3,           # 3x3 windows every 2 pixels overlap, as in AlexNet
        pool_stride: int = 2,
        lrn: bool = False,
        lrn_size: int = 5,            # the paper's k=2, n=5, alpha=1e-4, beta=0.75
        batch_norm: bool = False,     # BatchNorm after each conv; the paper has none
        fc: int = 512,
        dropout: float = 0.5,
        num_classes: int = 10,
        input_size: int = 28,
    ):
        super().__init__()
        c1, c2, c3, c4, c5 = channels

        def relu():
            return nn.ReLU(inplace=True)

        def norm():
            return [nn.LocalResponseNorm(lrn_size, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

        def conv(i, cin, cout, kernel, **kwargs):
            """conv<i> (no bias under BatchNorm: it has its own), bn<i> when asked, relu<i>."""
            layers = [(f"conv{i}", nn.Conv2d(cin, cout, kernel, bias=not batch_norm, **kwargs))]
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
            return [*layers, (f"relu{i}", relu())]

        layers = [
            *conv(1, 1, c1, kernel_size, stride=stride, padding=padding),
            *(("norm1", m) for m in norm()),
            ("pool1", pool(pool_type, pool_size, pool_stride)),
            *conv(2, c1, c2, 3, padding=1),
            *(("norm2", m) for m in norm()),
            ("pool2", pool(pool_type, pool_size, pool_stride)),
            *conv(3, c2, c3, 3, padding=1),
            *conv(4, c3, c4, 3, padding=1),
            *conv(5, c4, c5, 3, padding=1),
            ("pool3", pool(pool_type, pool_size, pool_stride)),
        ]
        self.features = nn.Sequential(OrderedDict(layers))
        size = output_size(input_size, kernel_size, stride, padding)  # seed 004's arithmetic
        for _ in range(3):
            size = output_size(size, pool_size, pool_stride)  # 3x3 padded convs keep the size
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("drop1", nn.Dropout(dropout)),
            ("fc1", nn.Linear(c5 * size * size, fc)), ("relu6", relu()),
            ("drop2", nn.Dropout(dropout)),
            ("fc2", nn.Linear(fc, fc)), ("relu7", relu()),
            ("fc3", nn.Linear(fc, num_classes)),
        ]))
        # Glorot initialisation. Without BatchNorm, PyTorch's default shrinks the signal at each
        # of the eight layers and He's inflates it (max pools and dropout scaling add to that): at
        # the seed's lr 1e-2 either one stalls for the first epoch, Glorot does not.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.features(x))
