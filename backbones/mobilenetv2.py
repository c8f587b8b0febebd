"""MobileNetV2 feature extractor with torchvision's module names, so its ImageNet weights load unchanged."""
from __future__ import annotations

from typing import Mapping

import torch
from torchvision.models import mobilenet_v2

from .base import SequentialBackbone, WeightsError
from .registry import register_backbone

__all__ = ["MobileNetV2Backbone"]

# Indices into torchvision's ``features`` (block table: Sandler et al., Table 2): the low-level tap ends the stride-4 stage,
# blocks 7 and 14 are the first to reach stride 16 and 32, block 17 is the last inverted residual.
_LOW_LEVEL_END, _STRIDE16_START, _STRIDE32_START, _OUT_END = 4, 7, 14, 18


@register_backbone("mobilenetv2")
class MobileNetV2Backbone(SequentialBackbone):
    """MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018)."""

    upstream = "mobilenet_v2"
    weights_source = "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    unused_upstream_prefixes = ("features.18.", "classifier.")

    def __init__(self, *, output_stride: int = 16, width_mult: float = 1.0) -> None:
        super().__init__()
        self.width_mult = width_mult
        # Block 18 (1x1 conv to 1280) and the classifier only serve ImageNet classification.
        self._set_features(
            list(mobilenet_v2(weights=None, width_mult=width_mult).features[:_OUT_END]),
            low_level_end=_LOW_LEVEL_END, stride16_start=_STRIDE16_START, stride32_start=_STRIDE32_START,
            output_stride=output_stride,
        )

    def imagenet_state_dict(self) -> Mapping[str, torch.Tensor]:
        if self.width_mult != 1.0:
            raise WeightsError(f"ImageNet weights exist for width_mult=1.0 only, not {self.width_mult}")
        return super().imagenet_state_dict()
