"""Inception v2 (BN-Inception) feature extractor: GoogLeNet with BatchNorm after every conv and each 5x5 conv
replaced by two 3x3 convs, from the paper's table (no upstream weights)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from .base import SequentialBackbone
from .registry import register_backbone

__all__ = ["BNInceptionBlock", "InceptionV2Backbone"]

# Inception modules of Ioffe & Szegedy's Figure 5: (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
# pool, pool projection, stride). A stride-2 module has no 1x1 branch and passes its max-pooled input through.
_MODULES = (
    (64, 64, 64, 64, 96, "avg", 32, 1),  # 3a
    (64, 64, 96, 64, 96, "avg", 64, 1),  # 3b
    (0, 128, 160, 64, 96, "max", 0, 2),  # 3c
    (224, 64, 96, 96, 128, "avg", 128, 1),  # 4a
    (192, 96, 128, 96, 128, "avg", 128, 1),  # 4b
    (160, 128, 160, 128, 160, "avg", 128, 1),  # 4c
    (96, 128, 192, 160, 192, "avg", 128, 1),  # 4d
    (0, 128, 192, 192, 256, "max", 0, 2),  # 4e
    (352, 192, 320, 160, 224, "avg", 128, 1),  # 5a
    (352, 192, 320, 192, 224, "max", 128, 1),  # 5b
)
# Indices into ``features``: the stem is conv 7x7/2, max-pool, conv 1x1, conv 3x3 (the stride-4 tap), max-pool;
# 3c and 4e are the modules that reach stride 16 and 32.
_LOW_LEVEL_END, _STRIDE16_START, _STRIDE32_START = 4, 7, 12


class BNInceptionBlock(nn.Module):
    """One BN-Inception module: 1x1, 1x1 -> 3x3, 1x1 -> 3x3 -> 3x3 and pool (-> 1x1) branches, concatenated."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int, double_reduce: int,
                 double: int, pool: str, pool_projection: int, *, stride: int = 1) -> None:
        super().__init__()
        self.branch1 = Conv2dNormActivation(in_channels, ch1x1, 1) if ch1x1 else None
        self.branch2 = nn.Sequential(
            Conv2dNormActivation(in_channels, ch3x3_reduce, 1), Conv2dNormActivation(ch3x3_reduce, ch3x3, 3, stride)
        )
        self.branch3 = nn.Sequential(
            Conv2dNormActivation(in_channels, double_reduce, 1),
            Conv2dNormActivation(double_reduce, double, 3),
            Conv2dNormActivation(double, double, 3, stride),
        )
        pooling = (nn.MaxPool2d if pool == "max" else nn.AvgPool2d)(3, stride, 1)
        projection = [Conv2dNormActivation(in_channels, pool_projection, 1)] if pool_projection else []
        self.branch4 = nn.Sequential(pooling, *projection)
        self.out_channels = ch1x1 + ch3x3 + double + (pool_projection or in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch2(x), self.branch3(x), self.branch4(x)]
        if self.branch1 is not None:
            branches.insert(0, self.branch1(x))
        return torch.cat(branches, 1)


@register_backbone("inception_v2")
class InceptionV2Backbone(SequentialBackbone):
    """BN-Inception (Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift", ICML 2015): the network of its Figure 5, with plain padded convs and pools."""

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, 64, 7, stride=2),
            nn.MaxPool2d(3, 2, 1),
            Conv2dNormActivation(64, 64, 1),
            Conv2dNormActivation(64, 192, 3),
            nn.MaxPool2d(3, 2, 1),
        ]
        channels = 192
        for *widths, stride in _MODULES:
            layers.append(BNInceptionBlock(channels, *widths, stride=stride))
            channels = layers[-1].out_channels
        self._set_features(
            layers, low_level_end=_LOW_LEVEL_END, stride16_start=_STRIDE16_START, stride32_start=_STRIDE32_START,
            output_stride=output_stride,
        )
