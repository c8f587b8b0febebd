"""MobileNetV3 feature extractors with torchvision's module names, so their ImageNet weights load unchanged.

The ``"out"`` tap is the last module of torchvision's ``features``: the 1x1 conv (960 / 576 channels, hardswish)
that follows the last inverted residual. torchvision's own DeepLabV3 and LR-ASPP builders tap it ("C5"), it
is ImageNet-trained, and the last inverted residual alone ends in a linear (non-activated) 160 / 96-channel
bottleneck meant to be expanded, not read. Only the classifier is dropped from the upstream state dict.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch
from torchvision.models import get_model, get_model_weights

from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .registry import register_backbone

__all__ = ["MobileNetV3Backbone", "MobileNetV3Large", "MobileNetV3Small"]


class MobileNetV3Backbone(Backbone):
    """MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019); subclasses pick the size."""

    unused_upstream_prefixes = ("classifier.",)
    #: torchvision model name, also the key of its weights enum.
    upstream: ClassVar[str]
    #: Indices into ``features``: the end of the stride-4 stage and the blocks that first reach stride 16, 32.
    low_level_end: ClassVar[int]
    stride16_start: ClassVar[int]
    stride32_start: ClassVar[int]

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        self.features = get_model(self.upstream, weights=None).features
        dilate_for_output_stride(
            self.features[self.stride16_start :], self.features[self.stride32_start :], output_stride
        )
        self.feature_info = {
            "low_level": FeatureInfo(self.features[self.low_level_end - 1].out_channels, 4),
            "out": FeatureInfo(self.features[-1].out_channels, output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.features[: self.low_level_end](x)
        return {"low_level": low_level, "out": self.features[self.low_level_end :](low_level)}

    def imagenet_state_dict(self) -> Mapping[str, torch.Tensor]:
        return get_model_weights(self.upstream).IMAGENET1K_V1.get_state_dict(progress=True)


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
