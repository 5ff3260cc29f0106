"""Small CNNs on MNIST, trained with PyTorch Lightning and configured with Hydra."""

from cnn_lightning.checkpoints import CheckpointError, load_model

__all__ = ["CheckpointError", "load_model"]
