"""MobileNetV2 feature extractor with torchvision's module names, so its ImageNet weights load unchanged."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.models.mobilenetv2 import InvertedResidual

from .base import SequentialBackbone, WeightsError
from .registry import register_backbone

__all__ = ["BlockInputPadding", "MobileNetV2Backbone"]

# Indices into torchvision's ``features`` (block table: Sandler et al., Table 2): the low-level tap ends the stride-4 stage,
# blocks 7 and 14 are the first to reach stride 16 and 32, block 17 is the last inverted residual.
_LOW_LEVEL_END, _STRIDE16_START, _STRIDE32_START, _OUT_END = 4, 7, 14, 18


@register_backbone("mobilenetv2")
class MobileNetV2Backbone(SequentialBackbone):
    """MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

    ``dilate_strided_block=False`` keeps the previous dilation in the block that loses its stride (see
    :func:`~backbones.base.dilate_for_output_stride`); ``pad_block_input=True`` leaves the stem conv unpadded and
    pads each inverted residual's input before its expansion conv instead of padding the depthwise conv (the
    "fixed padding" of VainF/DeepLabV3Plus-Pytorch's MobileNetV2: border pixels then see the expansion's response
    to zeros, not zeros). Both exist to run weights trained that way; the defaults are torchvision's network.
    """

    upstream = "mobilenet_v2"
    weights_source = "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    unused_upstream_prefixes = ("features.18.", "classifier.")

    def __init__(
        self, *, output_stride: int = 16, width_mult: float = 1.0, dilate_strided_block: bool = True,
        pad_block_input: bool = False,
    ) -> None:
        super().__init__()
        self.width_mult = width_mult
        # Block 18 (1x1 conv to 1280) and the classifier only serve ImageNet classification.
        self._set_features(
            list(mobilenet_v2(weights=None, width_mult=width_mult).features[:_OUT_END]),
            low_level_end=_LOW_LEVEL_END, stride16_start=_STRIDE16_START, stride32_start=_STRIDE32_START,
            output_stride=output_stride, dilate_strided_block=dilate_strided_block,
        )
        if pad_block_input:
            self.features[0][0].padding = (0, 0)
            for index in range(1, len(self.features)):
                self.features[index] = BlockInputPadding(self.features[index])

    def imagenet_state_dict(self) -> Mapping[str, torch.Tensor]:
        if self.width_mult != 1.0:
            raise WeightsError(f"ImageNet weights exist for width_mult=1.0 only, not {self.width_mult}")
        return super().imagenet_state_dict()


class BlockInputPadding(nn.Module):
    """An inverted residual whose input is zero-padded before the expansion conv, its depthwise conv unpadded.

    Holds the block's own ``conv`` under the same name, so state dicts are those of torchvision's block.
    """

    def __init__(self, block: InvertedResidual) -> None:
        super().__init__()
        self.conv = block.conv
        self.out_channels = block.out_channels
        self.use_res_connect = block.use_res_connect
        depthwise = next(m for m in block.conv.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
        self.pad = depthwise.dilation[0] * (depthwise.kernel_size[0] - 1) // 2
        depthwise.padding = (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, (self.pad,) * 4))
        return x + out if self.use_res_connect else out
