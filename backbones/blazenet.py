"""BlazeNet: BlazeFace's feature extractor (single and double BlazeBlocks), extended to stride 32 for DeepLabV3+
(no upstream weights).

BlazeFace stops at stride 16 with 96 channels (on 128x128 faces). Here its stages are kept as published
(stride 4: single BlazeBlocks of 48 channels, the ``"low_level"`` tap; stride 8 and 16: double BlazeBlocks of
96) and one stage of double BlazeBlocks is added at stride 32 with the widths doubled (48-channel projection,
192 out), the ``"out"`` tap: ASPP then gets a stride-32 map at OS32 and 192 channels at every output stride.
BatchNorm follows every conv (the published model folds it away).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from .base import SequentialBackbone
from .ceil_padding import CeilMaxPool2d
from .registry import register_backbone

__all__ = ["BlazeBlock", "BlazeNetBackbone"]

# (out_channels, projection channels of a double block or None for a single block, stride) after the 5x5 stem.
_BLOCKS = (
    (24, None, 1), (24, None, 1),
    (48, None, 2), (48, None, 1), (48, None, 1),
    (96, 24, 2), (96, 24, 1), (96, 24, 1),
    (96, 24, 2), (96, 24, 1), (96, 24, 1),
    (192, 48, 2), (192, 48, 1), (192, 48, 1),
)
# Indices into ``features`` (stem first): the stride-4 stage ends at block 5; blocks 9 and 12 reach 16 and 32.
_LOW_LEVEL_END, _STRIDE16_START, _STRIDE32_START = 6, 9, 12


def _depthwise_pointwise(in_channels: int, out_channels: int, *, stride: int) -> list[nn.Module]:
    """5x5 depthwise conv (carrying the stride) then a linear 1x1 conv, each with BatchNorm."""
    return [
        Conv2dNormActivation(in_channels, in_channels, 5, stride=stride, groups=in_channels, activation_layer=None),
        Conv2dNormActivation(in_channels, out_channels, 1, activation_layer=None),
    ]


class BlazeBlock(nn.Module):
    """BlazeBlock (Fig. 1): 5x5 depthwise + 1x1 conv, or twice with a ReLU'd ``projection`` between (double
    BlazeBlock); added to the input, which a stride-2 block max-pools 2x2 and zero-pads to the new width; ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 projection: int | None = None) -> None:
        super().__init__()
        if projection is None:
            layers = _depthwise_pointwise(in_channels, out_channels, stride=stride)
        else:
            layers = [*_depthwise_pointwise(in_channels, projection, stride=stride), nn.ReLU(inplace=True),
                      *_depthwise_pointwise(projection, out_channels, stride=1)]
        self.conv = nn.Sequential(*layers)
        self.shortcut = CeilMaxPool2d(2, 2) if stride > 1 else nn.Identity()
        self.extra_channels = out_channels - in_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(self.conv(x) + shortcut)


@register_backbone("blazenet")
class BlazeNetBackbone(SequentialBackbone):
    """BlazeNet, the feature extractor of BlazeFace (Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face
    Detection on Mobile GPUs", CVPR Workshops 2019), extended by one stride-32 stage."""

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [Conv2dNormActivation(3, 24, 5, stride=2)]
        for out_channels, projection, stride in _BLOCKS:
            layers.append(BlazeBlock(layers[-1].out_channels, out_channels, stride=stride, projection=projection))
        self._set_features(
            layers, low_level_end=_LOW_LEVEL_END, stride16_start=_STRIDE16_START, stride32_start=_STRIDE32_START,
            output_stride=output_stride,
        )
