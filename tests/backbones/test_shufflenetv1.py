"""ShuffleNetV1: the paper's complexity for every group count and width, grouped pointwise convs, a channel
shuffle that mixes the groups, and the strided unit's average-pooled shortcut."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from backbones import build_backbone
from backbones.shufflenetv1 import ShuffleNetV1Unit


# Zhang et al.: MFLOPs (multiply-adds) at 224x224 with the 1000-way classifier, Table 1 (1x, g = 1..8) and
# Table 5 (0.5x, 1.5x, 2x at g = 3); output channels of stage 4, Table 1 and the width scaling.
PAPER = {
    "shufflenetv1_g1": (143, 576), "shufflenetv1_g2": (140, 800), "shufflenetv1_g3": (137, 960),
    "shufflenetv1_g4": (133, 1088), "shufflenetv1_g8": (137, 1536), "shufflenetv1_g3_x0_5": (38, 480),
    "shufflenetv1_g3_x1_5": (292, 1440), "shufflenetv1_g3_x2_0": (524, 1920),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_complexity_and_width_match_the_paper(name: str) -> None:
    mflops, channels = PAPER[name]
    backbone = build_backbone(name, output_stride=32).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = backbone(torch.randn(1, 3, 224, 224))["out"]
    assert out.shape == (1, channels, 7, 7)
    classifier = channels * 1000
    measured = (counter.get_total_flops() / 2 + classifier) / 1e6
    assert measured == pytest.approx(mflops, rel=0.015)


def test_pointwise_convs_are_grouped_except_the_first() -> None:
    backbone = build_backbone("shufflenetv1_g8")
    units = [unit for stage in (backbone.stage2, backbone.stage3, backbone.stage4) for unit in stage]
    groups = [(unit.compress[0].groups, unit.expand[0].groups) for unit in units]
    assert groups[0] == (1, 8) and set(groups[1:]) == {(8, 8)}
    assert all(unit.depthwise[0].groups == unit.depthwise[0].in_channels for unit in units)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_mixes_the_groups(groups: int) -> None:
    """Without the shuffle, grouped 1x1 -> depthwise -> grouped 1x1 keeps each group's channels to itself."""
    unit = ShuffleNetV1Unit(24 * groups, 24 * groups, groups=groups, stride=1).eval()
    x = torch.randn(1, 24 * groups, 8, 8, requires_grad=True)
    unit(x)[:, 24:].sum().backward()  # every output channel outside the first group
    assert x.grad[:, :24].abs().sum() > 0


def test_strided_unit_concatenates_the_average_pooled_input() -> None:
    unit = ShuffleNetV1Unit(24, 240, groups=3, stride=2, first_groups=1).eval()
    x = torch.rand(1, 24, 9, 13)  # non-negative, as after a ReLU
    with torch.no_grad():
        y = unit(x)
    assert y.shape == (1, 240, 5, 7)
    assert torch.allclose(y[:, :24], F.avg_pool2d(x, 3, 2, 1))


@pytest.mark.parametrize(("output_stride", "dilations"), [(32, {1}), (16, {1, 2}), (8, {1, 2, 4})])
def test_dilation_reaches_the_depthwise_convs(output_stride: int, dilations: set[int]) -> None:
    backbone = build_backbone("shufflenetv1_g3", output_stride=output_stride)
    found = {m.dilation[0] for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    assert found == dilations
    assert all(unit.concatenate for unit in (backbone.stage2[0], backbone.stage3[0], backbone.stage4[0]))
