"""Inception v3 feature extractor with torchvision's module names, so its ImageNet weights load unchanged.

torchvision's reductions are unpadded: the stride-1 3x3 convs ``Conv2d_2a_3x3``/``Conv2d_4a_3x3`` shrink the
map by two rows, the stride-2 convs and max-pools (stem, ``Mixed_6a``, ``Mixed_7a``) give ``(H - 1) // 2`` rows.
Ours keep every feature at ``ceil(H / stride)`` rows, as the contract and dilation need:

- ``Conv2d_2a_3x3``/``Conv2d_4a_3x3`` get padding 1 (torchvision's output is ours without its border);
- the stride-2 convs and pools pad only bottom/right (:mod:`backbones.ceil_padding`), so torchvision's output
  is the top-left corner of ours;
- every other module (``Conv2d_2b_3x3``, ``Conv2d_3b_1x1``, ``Mixed_5b``..``Mixed_5d``, ``Mixed_6b``..``Mixed_6e``,
  ``Mixed_7b``, ``Mixed_7c``) is torchvision's, unchanged.

The branches' 3x3 average pools (stride 1) are not dilated. ``AuxLogits`` and ``fc`` are dropped. As for
Inception v1, torchvision's weights expect ``(x - 0.5) / 0.5`` (its ``transform_input``), declared as mean/std.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.inception import (
    BasicConv2d, Inception3, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE,
)

from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .ceil_padding import CeilConv2d, CeilMaxPool2d
from .registry import register_backbone

__all__ = ["InceptionV3Backbone"]

# torchvision's modules in forward order; "low_level" is Conv2d_4a_3x3's output (stride 4), "out" Mixed_7c's.
_TO_LOW_LEVEL = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
_TO_OUT = ("maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
           "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
_STRIDE16_START, _STRIDE32_START = _TO_OUT.index("Mixed_6a"), _TO_OUT.index("Mixed_7a")


class SizeKeepingConv2d(BasicConv2d):
    """torchvision's conv-BN-ReLU whose unpadded convs keep ``ceil(H / stride)`` rows (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        conv = self.conv
        if conv.padding == (0, 0) and conv.kernel_size != (1, 1):
            if conv.stride == (1, 1):
                conv.padding = tuple((k - 1) // 2 for k in conv.kernel_size)
            else:
                self.conv = CeilConv2d(in_channels, out_channels, conv.kernel_size, conv.stride, bias=False)


class ReductionB(InceptionB):
    """torchvision's ``InceptionB`` (``Mixed_6a``) with its functional max-pool as a size-keeping module."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, SizeKeepingConv2d)
        self.branch_pool = CeilMaxPool2d(3, 2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), branch3x3dbl, self.branch_pool(x)]


class ReductionD(InceptionD):
    """torchvision's ``InceptionD`` (``Mixed_7a``) with its functional max-pool as a size-keeping module."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, SizeKeepingConv2d)
        self.branch_pool = CeilMaxPool2d(3, 2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [branch3x3, branch7x7x3, self.branch_pool(x)]


@register_backbone("inception_v3")
class InceptionV3Backbone(Backbone):
    """Inception v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016)."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    upstream = "inception_v3"
    weights_source = "torchvision Inception_V3_Weights.IMAGENET1K_V1"
    unused_upstream_prefixes = ("AuxLogits.", "fc.")

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        # PyTorch's default init: torchvision's truncated-normal one takes seconds and ImageNet weights replace it.
        blocks = [SizeKeepingConv2d, InceptionA, ReductionB, InceptionC, ReductionD, InceptionE, InceptionAux]
        model = Inception3(aux_logits=False, transform_input=False, init_weights=False, inception_blocks=blocks)
        for name in (*_TO_LOW_LEVEL, *_TO_OUT):
            module = getattr(model, name)
            self.add_module(name, CeilMaxPool2d(3, 2) if name.startswith("maxpool") else module)
        late = [getattr(self, name) for name in _TO_OUT]
        dilate_for_output_stride(late[_STRIDE16_START:], late[_STRIDE32_START:], output_stride)
        self.feature_info = {
            "low_level": FeatureInfo(self.Conv2d_4a_3x3.conv.out_channels, 4),
            "out": FeatureInfo(_mixed_e_channels(self.Mixed_7c), output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for name in _TO_LOW_LEVEL:
            x = getattr(self, name)(x)
        low_level = x
        for name in _TO_OUT:
            x = getattr(self, name)(x)
        return {"low_level": low_level, "out": x}


def _mixed_e_channels(block: InceptionE) -> int:
    """Output channels of torchvision's ``InceptionE``: its 1x1 branch, two split 3x3 branches and pool branch."""
    parts = (block.branch1x1, block.branch3x3_2a, block.branch3x3_2b, block.branch3x3dbl_3a,
             block.branch3x3dbl_3b, block.branch_pool)
    return sum(part.conv.out_channels for part in parts)
