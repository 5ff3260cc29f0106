"""The networks: plain ``nn.Module``s that know nothing of Lightning."""

from cnn_lightning.nets.tiny import TinyNet

__all__ = ["TinyNet"]
