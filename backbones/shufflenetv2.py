"""ShuffleNetV2 feature extractors with torchvision's module names, so their ImageNet weights load unchanged.

The ``"low_level"`` tap is the stem's max-pool (stride 4, 24 channels at every width). The ``"out"`` tap is
``conv5``, the ImageNet-trained 1x1 conv (BN, ReLU) after ``stage4``: in each stride-1 block half the channels
pass through untouched, so ``stage4``'s output is largely a shuffle of earlier features and ``conv5`` is the
first layer that mixes them all. Only ``fc`` is dropped from the upstream state dict.
"""
from __future__ import annotations

import torch
from torchvision.models import get_model, get_model_weights

from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .registry import register_backbone

__all__ = [
    "ShuffleNetV2Backbone",
    "ShuffleNetV2X0_5",
    "ShuffleNetV2X1_0",
    "ShuffleNetV2X1_5",
    "ShuffleNetV2X2_0",
]


class ShuffleNetV2Backbone(Backbone):
    """ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines ...", ECCV 2018); subclasses pick the width."""

    unused_upstream_prefixes = ("fc.",)

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        model = get_model(self.upstream, weights=None)
        self.conv1, self.maxpool = model.conv1, model.maxpool
        self.stage2, self.stage3, self.stage4, self.conv5 = model.stage2, model.stage3, model.stage4, model.conv5
        # The strided blocks keep ``stride == 2`` so both branches still run; only their convs lose the stride.
        dilate_for_output_stride([self.stage3, self.stage4, self.conv5], [self.stage4, self.conv5], output_stride)
        self.feature_info = {
            "low_level": FeatureInfo(self.conv1[0].out_channels, 4),
            "out": FeatureInfo(self.conv5[0].out_channels, output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.maxpool(self.conv1(x))
        out = self.conv5(self.stage4(self.stage3(self.stage2(low_level))))
        return {"low_level": low_level, "out": out}


def _width(upstream: str) -> type[ShuffleNetV2Backbone]:
    """A subclass bound to one torchvision width, so weight errors name the variant (e.g. ``ShuffleNetV2X1_0``)."""
    width = upstream.removeprefix("shufflenet_v2_").upper()
    attributes = {
        "__doc__": f"ShuffleNetV2 {width} (torchvision ``{upstream}``).",
        "__module__": __name__,
        "upstream": upstream,
        "weights_source": f"torchvision {get_model_weights(upstream).IMAGENET1K_V1!r}",
    }
    return type(f"ShuffleNetV2{width}", (ShuffleNetV2Backbone,), attributes)


ShuffleNetV2X0_5 = register_backbone("shufflenetv2_x0_5")(_width("shufflenet_v2_x0_5"))
ShuffleNetV2X1_0 = register_backbone("shufflenetv2_x1_0")(_width("shufflenet_v2_x1_0"))
ShuffleNetV2X1_5 = register_backbone("shufflenetv2_x1_5")(_width("shufflenet_v2_x1_5"))
ShuffleNetV2X2_0 = register_backbone("shufflenetv2_x2_0")(_width("shufflenet_v2_x2_0"))
