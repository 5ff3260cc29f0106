"""The networks: plain ``nn.Module``s that know nothing of Lightning."""

from cnn_lightning.nets.alexnet_lite import AlexNetLite
from cnn_lightning.nets.lenet import LeNet5
from cnn_lightning.nets.micro import MicroNet
from cnn_lightning.nets.tiny import TinyNet

__all__ = ["AlexNetLite", "LeNet5", "MicroNet", "TinyNet"]
