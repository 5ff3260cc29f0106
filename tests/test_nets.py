import torch

from cnn_lightning.nets import TinyNet


def trainable(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_tiny_is_under_8000_parameters_with_ten_logits():
    net = TinyNet()
    assert trainable(net) < 8000
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, 10)
