"""The per-layer summary against sizes, receptive fields and counts worked out by hand."""

import subprocess
import sys
from collections import OrderedDict

import pytest
from torch import nn

from cnn_lightning.config import project_root
from cnn_lightning.nets import AlexNetLite, LeNet5, TinyNet
from cnn_lightning.nets.layers import output_size
from cnn_lightning.summary import LayerRow, format_table, layer_table, totals


def by_name(rows):
    return {r.name: r for r in rows}


def test_lenet_sizes_follow_seed_004s_arithmetic():
    rows = by_name(layer_table(LeNet5()))
    # 28 -> conv 5x5 pad 2 -> 28 -> pool 2/2 -> 14 -> conv 5x5 -> 10 -> pool 2/2 -> 5
    assert rows["features.conv1"].output_shape == (6, 28, 28)
    assert rows["features.pool1"].output_shape == (6, 14, 14)
    assert rows["features.conv2"].output_shape == (16, 10, 10)
    assert rows["features.pool2"].output_shape == (16, 5, 5)
    assert rows["classifier.flatten"].output_shape == (400,)
    assert rows["classifier.fc3"].output_shape == (10,)
    assert rows["features.conv1"].arithmetic == "(28-5+2*2)/1+1 = 28"
    assert rows["features.pool1"].arithmetic == "(28-2)/2+1 = 14"
    assert rows["features.conv2"].arithmetic == "(14-5+2*0)/1+1 = 10"


def test_lenet_receptive_fields_and_jumps():
    rows = by_name(layer_table(LeNet5()))
    # RF_out = RF_in + (F - 1) * J_in, J_out = J_in * S
    assert (rows["features.conv1"].rf, rows["features.conv1"].jump) == (5, 1)    # 1 + 4*1
    assert (rows["features.pool1"].rf, rows["features.pool1"].jump) == (6, 2)    # 5 + 1*1
    assert (rows["features.conv2"].rf, rows["features.conv2"].jump) == (14, 2)   # 6 + 4*2
    assert (rows["features.pool2"].rf, rows["features.pool2"].jump) == (16, 4)   # 14 + 1*2
    assert rows["classifier.fc1"].rf == 16 + 4 * 4  # fc1 sees the whole 5x5 map: 16 + (5-1)*4


def test_lenet_params_and_macs():
    rows = layer_table(LeNet5())
    named = by_name(rows)
    assert named["features.conv1"].params == 6 * (25 + 1)
    assert named["features.conv1"].macs == 6 * 28 * 28 * 25
    assert named["features.conv2"].macs == 16 * 10 * 10 * 6 * 25
    assert named["classifier.fc1"].macs == 400 * 120
    assert totals(rows) == {"params": 61706, "macs": 117600 + 240000 + 48000 + 10080 + 840, "rf": 32}


def test_receptive_field_of_a_known_stack():
    # Three 3x3 convs, a 2x2 pool, a 3x3 conv with dilation 2, a 3x3 stride-2 conv:
    # RF 3, 5, 7 (J 1), 8 (J 2), 8 + 4*2 = 16, 16 + 2*2 = 20 (J 4).
    stack = nn.Sequential(OrderedDict([
        ("a", nn.Conv2d(1, 2, 3)), ("b", nn.Conv2d(2, 2, 3)), ("c", nn.Conv2d(2, 2, 3)),
        ("pool", nn.MaxPool2d(2)), ("dil", nn.Conv2d(2, 2, 3, dilation=2, padding=2)),
        ("down", nn.Conv2d(2, 2, 3, stride=2, padding=1)),
    ]))
    rows = layer_table(stack, input_shape=(1, 28, 28))
    assert [(r.name, r.rf, r.jump) for r in rows] == [
        ("a", 3, 1), ("b", 5, 1), ("c", 7, 1), ("pool", 8, 2), ("dil", 16, 2), ("down", 20, 4),
    ]
    assert [r.output_shape[1:] for r in rows] == [(26, 26), (24, 24), (22, 22), (11, 11), (11, 11), (6, 6)]
    assert rows[4].arithmetic == "(11-5+2*2)/1+1 = 11"  # the dilated kernel's extent is 5


def test_tiny_global_pool_sees_the_whole_digit():
    rows = by_name(layer_table(TinyNet()))
    assert rows["features.conv5.conv"].rf == 18 and rows["features.conv5.conv"].output_shape == (16, 6, 6)
    assert rows["classifier.gap"].rf == 18 + 5 * 2 == 28
    assert totals(layer_table(TinyNet()))["params"] == sum(p.numel() for p in TinyNet().parameters())


@pytest.mark.parametrize("net", [LeNet5(), AlexNetLite(lrn=True), TinyNet()], ids=lambda net: type(net).__name__)
def test_table_totals_match_the_net_and_shapes_match_the_formula(net):
    rows = layer_table(net)
    assert totals(rows)["params"] == sum(p.numel() for p in net.parameters() if p.requires_grad)
    for r in rows:
        if r.arithmetic:  # the printed formula's result is the shape the forward pass produced
            assert r.arithmetic.endswith(f"= {r.output_shape[-1]}")


def test_layer_table_leaves_the_net_as_it_found_it():
    net = TinyNet().train()
    layer_table(net)
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_output_size_formula_and_its_error():
    assert output_size(28, 5, padding=2) == 28 and output_size(28, 2, 2) == 14 and output_size(13, 3, 2) == 6
    with pytest.raises(ValueError, match="does not fit"):
        output_size(2, 5)


def test_format_table_is_markdown_with_totals():
    rows = [LayerRow("features.conv1", "Conv2d", (6, 28, 28), 156, 117600, 5, 1, "(28-5+2*2)/1+1 = 28")]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| layer") and set(lines[1]) <= set("|-:")
    assert "6×28×28" in lines[2] and "117,600" in lines[2]
    assert lines[-1].startswith("| **total**") and "156" in lines[-1]
    assert len({len(line) for line in lines}) == 1  # aligned columns: reads as plain text too


def test_command_line_prints_the_table_for_a_model_with_overrides():
    result = subprocess.run(
        [sys.executable, "-m", "cnn_lightning.summary", "model=lenet", "model.net.padding=0"],
        cwd=project_root(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "LeNet5" in result.stdout
    # Without padding: 28 -> 24 -> 12 -> 8 -> 4, so fc1 has 16*4*4*120 + 120 parameters.
    assert "16×4×4" in result.stdout and f"{16 * 4 * 4 * 120 + 120:,}" in result.stdout
