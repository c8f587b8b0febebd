"""MobileNetV2's options for weights trained elsewhere: where dilation starts, and padding of each block's input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backbones import build_backbone


def depthwise_dilations(backbone: nn.Module) -> list[int]:
    """Dilation of each block's 3x3 depthwise conv, blocks 1..17."""
    return [next(m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)).dilation[0]
            for block in list(backbone.features)[1:]]


def test_strided_block_keeps_its_dilation_when_asked() -> None:
    # Blocks 1..17; block 7 first reaches stride 16, block 14 stride 32.
    assert depthwise_dilations(build_backbone("mobilenetv2", output_stride=16)) == [1] * 13 + [2] * 4
    assert depthwise_dilations(build_backbone("mobilenetv2", output_stride=16, dilate_strided_block=False)) == (
        [1] * 14 + [2] * 3)
    assert depthwise_dilations(build_backbone("mobilenetv2", output_stride=8, dilate_strided_block=False)) == (
        [1] * 7 + [2] * 7 + [4] * 3)
    assert depthwise_dilations(build_backbone("mobilenetv2", output_stride=8)) == [1] * 6 + [2] * 7 + [4] * 4


def test_block_input_padding_keeps_names_and_pads_before_the_expansion(randomise_batchnorm) -> None:
    plain = randomise_batchnorm(build_backbone("mobilenetv2", width_mult=0.5))
    padded = build_backbone("mobilenetv2", width_mult=0.5, pad_block_input=True).eval()
    padded.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 35, 41)
    # The stem is unpadded: one pixel fewer per side at stride 2.
    stem = padded.features[0](x)
    assert stem.shape[-2:] == (17, 20)
    # A block with an expansion conv: zero-pad its input, then run the block's layers without any padding.
    block, source = padded.features[2], plain.features[2]
    y = torch.randn(1, source.conv[0][0].in_channels, 16, 19)
    with torch.no_grad():
        expanded = source.conv[0](F.pad(y, (1, 1, 1, 1)))
        depthwise = source.conv[1][0]
        manual = F.conv2d(expanded, depthwise.weight, stride=depthwise.stride, groups=depthwise.groups)
        manual = source.conv[3](source.conv[2](F.relu6(source.conv[1][1](manual))))
        torch.testing.assert_close(block(y), manual)
        assert not torch.allclose(block(y), source(y), atol=1e-4)  # the border pixels differ
