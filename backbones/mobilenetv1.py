"""MobileNetV1 feature extractor: the paper's stack of depthwise-separable convolutions (no upstream weights)."""
from __future__ import annotations

from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from .base import SequentialBackbone
from .registry import register_backbone

__all__ = ["DepthwiseSeparable", "MobileNetV1Backbone"]

# (out_channels, stride) of the 13 depthwise-separable layers of the paper's Table 1.
_LAYERS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
# Indices into ``features`` (stem first): the low-level tap ends the stride-4 stage, layers 6 and 12 are the
# first to reach stride 16 and 32.
_LOW_LEVEL_END, _STRIDE16_START, _STRIDE32_START = 4, 6, 12


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU (carrying the stride) then 1x1 pointwise conv-BN-ReLU, MobileNetV1's layer."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__(
            Conv2dNormActivation(in_channels, in_channels, 3, stride=stride, groups=in_channels),
            Conv2dNormActivation(in_channels, out_channels, 1),
        )
        self.out_channels = self[-1].out_channels


@register_backbone("mobilenetv1")
class MobileNetV1Backbone(SequentialBackbone):
    """MobileNetV1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
    Applications", 2017); ``width_mult`` is the paper's width multiplier alpha."""

    def __init__(self, *, output_stride: int = 16, width_mult: float = 1.0) -> None:
        super().__init__()
        self.width_mult = width_mult
        channels = _make_divisible(32 * width_mult, 8)
        layers: list[nn.Module] = [Conv2dNormActivation(3, channels, 3, stride=2)]
        for out_channels, stride in _LAYERS:
            layers.append(DepthwiseSeparable(channels, _make_divisible(out_channels * width_mult, 8), stride=stride))
            channels = layers[-1].out_channels
        self._set_features(
            layers, low_level_end=_LOW_LEVEL_END, stride16_start=_STRIDE16_START, stride32_start=_STRIDE32_START,
            output_stride=output_stride,
        )
