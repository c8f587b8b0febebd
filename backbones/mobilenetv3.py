"""MobileNetV3 feature extractors with torchvision's module names, so their ImageNet weights load unchanged.

The ``"out"`` tap is the last module of torchvision's ``features``: the 1x1 conv (960 / 576 channels, hardswish)
that follows the last inverted residual. torchvision's own DeepLabV3 and LR-ASPP builders tap it ("C5"), it
is ImageNet-trained, and the last inverted residual alone ends in a linear (non-activated) 160 / 96-channel
bottleneck meant to be expanded, not read. Only the classifier is dropped from the upstream state dict.
"""
from __future__ import annotations

from typing import ClassVar

from torchvision.models import get_model

from .base import SequentialBackbone
from .registry import register_backbone

__all__ = ["MobileNetV3Backbone", "MobileNetV3Large", "MobileNetV3Small"]


class MobileNetV3Backbone(SequentialBackbone):
    """MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019); subclasses pick the size."""

    unused_upstream_prefixes = ("classifier.",)
    #: Indices into ``features``: the end of the stride-4 stage and the blocks that first reach stride 16, 32.
    low_level_end: ClassVar[int]
    stride16_start: ClassVar[int]
    stride32_start: ClassVar[int]

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        self._set_features(
            list(get_model(self.upstream, weights=None).features),
            low_level_end=self.low_level_end, stride16_start=self.stride16_start,
            stride32_start=self.stride32_start, output_stride=output_stride,
        )


@register_backbone("mobilenetv3_large")
class MobileNetV3Large(MobileNetV3Backbone):
    """MobileNetV3-Large: low-level tap features[3] (24 ch), stride 16 from features[7], 32 from features[13]."""

    upstream = "mobilenet_v3_large"
    weights_source = "torchvision MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    low_level_end, stride16_start, stride32_start = 4, 7, 13


@register_backbone("mobilenetv3_small")
class MobileNetV3Small(MobileNetV3Backbone):
    """MobileNetV3-Small: low-level tap features[1] (16 ch), stride 16 from features[4], 32 from features[9]."""

    upstream = "mobilenet_v3_small"
    weights_source = "torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    low_level_end, stride16_start, stride32_start = 2, 4, 9
