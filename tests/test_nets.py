"""The nets as plain modules: shapes, parameter counts, switches, and the configs that build them."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from cnn_lightning.checkpoints import build_model
from cnn_lightning.config import project_root, register, to_plain
from cnn_lightning.nets import AlexNetLite, LeNet5, MicroNet, TinyNet


def trainable(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def compose_model(name: str, *overrides: str):
    register()
    with initialize_config_dir(config_dir=f"{project_root()}/conf", version_base="1.3"):
        return compose(config_name="train", overrides=[f"model={name}", *overrides])


@pytest.mark.parametrize("net", [LeNet5(), LeNet5(activation="sigmoid", pool_type="avg"), AlexNetLite(),
                                 AlexNetLite(lrn=True), AlexNetLite(batch_norm=True), TinyNet(), MicroNet()],
                         ids=lambda net: type(net).__name__)
def test_every_net_maps_a_batch_of_digits_to_ten_logits(net):
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_tiny_is_under_8000_parameters_with_ten_logits():
    net = TinyNet()
    assert trainable(net) < 8000
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_micro_is_under_5000_parameters_as_configured():
    # The count, on the net the default config builds (not only the class defaults).
    net = build_model(to_plain(compose_model("micro").model.net)).net
    assert isinstance(net, MicroNet) and trainable(net) == trainable(MicroNet()) < 5000
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_micro_has_no_fully_connected_layer_its_last_conv_maps_are_the_classes():
    net = MicroNet().eval()
    assert not any(isinstance(m, nn.Linear) for m in net.modules())
    images = torch.rand(2, 1, 28, 28)
    maps = net.features(images)
    assert maps.shape == (2, 10, 6, 6)
    torch.testing.assert_close(net(images), maps.mean(dim=(2, 3)))


def test_lenet_has_the_papers_61706_parameters():
    # conv1 6*(25+1) + conv2 16*(6*25+1) + fc 400*120+120 + 120*84+84 + 84*10+10
    assert trainable(LeNet5()) == 156 + 2416 + 48120 + 10164 + 850 == 61706


def test_alexnet_lite_is_the_largest_net():
    sizes = {name: trainable(net) for name, net in [("lenet", LeNet5()), ("tiny", TinyNet()),
                                                     ("alexnet_lite", AlexNetLite())]}
    assert max(sizes, key=sizes.get) == "alexnet_lite"
    assert sizes["alexnet_lite"] > 5 * sizes["lenet"]


def test_the_classic_switch_changes_activation_and_pooling():
    modern, classic = LeNet5(), LeNet5(activation="tanh", pool_type="avg")
    assert isinstance(modern.features.act1, nn.ReLU) and isinstance(modern.features.pool1, nn.MaxPool2d)
    assert isinstance(classic.features.act1, nn.Tanh) and isinstance(classic.features.pool1, nn.AvgPool2d)
    assert isinstance(classic.classifier.act3, nn.Tanh)
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in classic.modules())


def test_lrn_is_off_by_default_and_on_when_asked():
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in AlexNetLite().modules())
    with_lrn = AlexNetLite(lrn=True)
    assert isinstance(with_lrn.features.norm1, nn.LocalResponseNorm)
    assert isinstance(with_lrn.features.norm2, nn.LocalResponseNorm)


def test_lenet_batch_norm_follows_each_conv_when_asked():
    plain = dict(LeNet5().features.named_children())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.values())
    assert plain["conv1"].bias is not None
    net = LeNet5(c1=16, c2=32, batch_norm=True)
    layers = list(dict(net.features.named_children()))
    assert layers == ["conv1", "bn1", "act1", "pool1", "conv2", "bn2", "act2", "pool2"]
    assert net.features.conv1.bias is None and net.features.bn1.num_features == 16
    assert net.features.bn2.num_features == 32
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_alexnet_batch_norm_follows_each_conv_when_asked():
    plain = AlexNetLite()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    net = AlexNetLite(batch_norm=True, lrn=True)
    assert list(dict(net.features.named_children())) == [
        "conv1", "bn1", "relu1", "norm1", "pool1", "conv2", "bn2", "relu2", "norm2", "pool2",
        "conv3", "bn3", "relu3", "conv4", "bn4", "relu4", "conv5", "bn5", "relu5", "pool3"]
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [b.num_features for b in norms] == [32, 64, 96, 96, 64]
    assert all(c.bias is None for c in convs)  # BatchNorm's shift replaces the conv's bias
    # from the command line: the same net plus BatchNorm's 2 x 352 parameters, less the 352 conv biases
    configured = build_model(to_plain(compose_model("alexnet_lite", "model.net.batch_norm=true").model.net)).net
    assert isinstance(configured.features.bn5, nn.BatchNorm2d)
    assert trainable(configured) == trainable(plain) + 352


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lenet_pool_first_computes_what_the_papers_order_does(activation):
    torch.manual_seed(0)
    # float64: the test checks the algebra (max pooling commutes with a monotonic activation);
    # in float32, BatchNorm's batch statistics amplify one-ulp differences of the vectorised
    # activation on the two tensor sizes to about 1e-4 on some thread counts.
    net = LeNet5(c1=16, c2=32, batch_norm=True, activation=activation, pool_first=True).double().train()
    assert list(dict(net.features.named_children())) == ["conv1", "bn1", "pool1", "act1", "conv2", "bn2", "pool2", "act2"]
    f = net.features
    paper_order = nn.Sequential(f.conv1, f.bn1, f.act1, f.pool1, f.conv2, f.bn2, f.act2, f.pool2)
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(net.features(x), paper_order(x), atol=1e-10)
    with pytest.raises(ValueError, match="pool_first needs max pooling"):
        LeNet5(pool_type="avg", pool_first=True)  # an average does not commute with tanh


def test_alexnet_pools_overlap_and_its_head_drops_out():
    net = AlexNetLite()
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5 and convs[0].kernel_size == (5, 5)
    assert all(c.kernel_size == (3, 3) for c in convs[1:])
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_constructor_arguments_reach_the_layers():
    net = TinyNet(c1=4, kernel_size=5, padding=2, pool_type="avg", dropout=0.1)
    assert net.features.conv1.conv.out_channels == 4 and net.features.conv1.conv.kernel_size == (5, 5)
    assert net.features.conv1.conv.padding == (2, 2)
    assert isinstance(net.features.pool, nn.AvgPool2d)
    assert net.features.conv3.drop.p == 0.1
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="activation"):
        LeNet5(activation="swish")
    with pytest.raises(ValueError, match="pool"):
        AlexNetLite(pool_type="median")


@pytest.mark.parametrize(("model", "cls"), [("lenet", LeNet5), ("lenet_classic", LeNet5),
                                            ("alexnet_lite", AlexNetLite), ("tiny", TinyNet), ("micro", MicroNet)])
def test_each_model_config_builds_its_net(model, cls):
    cfg = compose_model(model)
    assert cfg.model.name == model
    net = build_model(to_plain(cfg.model.net)).net
    assert type(net) is cls
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_configs_differ_by_the_classic_switch():
    modern = build_model(to_plain(compose_model("lenet").model.net)).net
    classic = build_model(to_plain(compose_model("lenet_classic").model.net)).net
    assert isinstance(modern.features.act1, nn.ReLU) and isinstance(modern.features.pool1, nn.MaxPool2d)
    assert isinstance(classic.features.act1, (nn.Sigmoid, nn.Tanh))
    assert isinstance(classic.features.pool1, nn.AvgPool2d)


def test_alexnet_lite_config_is_the_seeds_recipe():
    model = compose_model("alexnet_lite").model
    assert model.optimizer._target_ == "torch.optim.SGD"
    assert (model.optimizer.lr, model.optimizer.momentum, model.optimizer.weight_decay) == (0.01, 0.9, 5e-4)
    assert model.scheduler._target_ == "torch.optim.lr_scheduler.ReduceLROnPlateau"
    assert (model.scheduler.mode, model.scheduler.factor) == ("max", 0.1)
    assert (model.scheduler_interval, model.monitor) == ("epoch", "val/acc")
    cfg = compose_model("alexnet_lite")
    assert cfg.data.batch_size == 128 and cfg.data.augment.enabled


def test_a_config_override_reaches_the_net():
    cfg = compose_model("tiny", "model.net.c1=4", "model.net.pool_type=avg")
    net = build_model(to_plain(cfg.model.net)).net
    assert net.features.conv1.conv.out_channels == 4 and isinstance(net.features.pool, nn.AvgPool2d)
