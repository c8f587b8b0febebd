"""MobileNeXt feature extractor: the paper's stack of sandglass blocks (no upstream weights)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from .base import SequentialBackbone
from .registry import register_backbone

__all__ = ["MobileNeXtBackbone", "SandglassBlock"]

# (reduction ratio t, out_channels c, repeats n, stride s) of the paper's Table 3.
_STAGES = (
    (2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2),
    (6, 384, 4, 1), (6, 576, 4, 2), (6, 960, 2, 1), (6, 1280, 1, 1),
)
# Indices into ``features`` (stem first): the low-level tap ends the stride-4 stage (the 144-channel block),
# blocks 6 and 13 are the first to reach stride 16 and 32.
_LOW_LEVEL_END, _STRIDE16_START, _STRIDE32_START = 3, 6, 13


class SandglassBlock(nn.Module):
    """Sandglass block: depthwise, linear 1x1 reduction, 1x1 expansion, linear depthwise carrying the stride.

    Identity mapping and both depthwise convs work on the wide tensors, the bottleneck sits in the middle;
    the shortcut exists when the block keeps the shape (stride 1, same channels), as in the paper.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, reduction: int) -> None:
        super().__init__()
        hidden = _make_divisible(in_channels / reduction, 8)
        self.conv = nn.Sequential(
            Conv2dNormActivation(in_channels, in_channels, 3, groups=in_channels, activation_layer=nn.ReLU6),
            Conv2dNormActivation(in_channels, hidden, 1, activation_layer=None),
            Conv2dNormActivation(hidden, out_channels, 1, activation_layer=nn.ReLU6),
            Conv2dNormActivation(
                out_channels, out_channels, 3, stride=stride, groups=out_channels, activation_layer=None
            ),
        )
        self.out_channels = self.conv[-1].out_channels
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_shortcut else y


@register_backbone("mobilenext")
class MobileNeXtBackbone(SequentialBackbone):
    """MobileNeXt (Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile Network Design", ECCV
    2020); ``width_mult`` scales every block's channels."""

    def __init__(self, *, output_stride: int = 16, width_mult: float = 1.0) -> None:
        super().__init__()
        self.width_mult = width_mult
        channels = _make_divisible(32 * width_mult, 8)
        layers: list[nn.Module] = [Conv2dNormActivation(3, channels, 3, stride=2, activation_layer=nn.ReLU6)]
        for reduction, out_channels, repeats, stride in _STAGES:
            out_channels = _make_divisible(out_channels * width_mult, 8)
            for i in range(repeats):
                layers.append(
                    SandglassBlock(channels, out_channels, stride=stride if i == 0 else 1, reduction=reduction)
                )
                channels = layers[-1].out_channels
        self._set_features(
            layers, low_level_end=_LOW_LEVEL_END, stride16_start=_STRIDE16_START, stride32_start=_STRIDE32_START,
            output_stride=output_stride,
        )
