"""Inception v1 (GoogLeNet) and v3 feature extractors with torchvision's module names, so its ImageNet weights load
unchanged.

torchvision's reductions are unpadded, so its feature maps have ``ceil(H / stride)`` rows only at some sizes.
Ours have them at every size, as the contract and dilation need:

- the strided max-pools and convs pad only bottom/right (:mod:`backbones.ceil_padding`): their windows stay
  where torchvision's are, and torchvision's output is the top-left corner of ours. GoogLeNet's pools
  (unpadded, ``ceil_mode``) are thereby unchanged at even sizes: ``inception_v1`` equals torchvision's model on
  any input whose size is a multiple of 32 (at output stride 32);
- Inception v3's stride-1 unpadded 3x3 convs (``Conv2d_2a_3x3``, ``Conv2d_4a_3x3``) get padding 1:
  torchvision's output is ours without its border;
- every other module is torchvision's, unchanged. The branches' stride-1 pools are not dilated.

torchvision's weights for both come from TensorFlow ports and are used with ``transform_input=True``, which turns
ImageNet-normalised input into ``(x - 0.5) / 0.5``: we declare that normalisation (mean = std = 0.5) instead, so
the same pixels reach the first conv. The auxiliary classifiers and ``fc`` are dropped.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torchvision.models import GoogLeNet
from torchvision.models.inception import (
    BasicConv2d, Inception3, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE,
)

from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .ceil_padding import CeilConv2d, CeilMaxPool2d
from .registry import register_backbone

__all__ = ["InceptionBackbone", "InceptionV1Backbone", "InceptionV3Backbone", "ReductionB", "ReductionD",
           "SizeKeepingConv2d"]


class InceptionBackbone(Backbone):
    """A torchvision Inception model's modules, run in order; its strided max-pools keep ``ceil(H / 2)`` rows."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    #: torchvision's module names in forward order: up to the stride-4 tap, then up to the ``"out"`` tap.
    to_low_level: ClassVar[tuple[str, ...]]
    to_out: ClassVar[tuple[str, ...]]
    #: The modules of ``to_out`` that first reach stride 16 and 32.
    stride16_start: ClassVar[str]
    stride32_start: ClassVar[str]

    def _take_modules(self, model: nn.Module, output_stride: int) -> None:
        for name in (*self.to_low_level, *self.to_out):
            module = getattr(model, name)
            if isinstance(module, nn.MaxPool2d):
                module = CeilMaxPool2d(module.kernel_size, module.stride)
            self.add_module(name, module)
        late = [getattr(self, name) for name in self.to_out]
        start16, start32 = self.to_out.index(self.stride16_start), self.to_out.index(self.stride32_start)
        dilate_for_output_stride(late[start16:], late[start32:], output_stride)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for name in self.to_low_level:
            x = getattr(self, name)(x)
        low_level = x
        for name in self.to_out:
            x = getattr(self, name)(x)
        return {"low_level": low_level, "out": x}


@register_backbone("inception_v1")
class InceptionV1Backbone(InceptionBackbone):
    """GoogLeNet (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015), torchvision's BatchNorm version:
    ``"low_level"`` is ``conv3`` (stride 4, 192 channels), ``"out"`` is ``inception5b`` (1024)."""

    upstream = "googlenet"
    weights_source = "torchvision GoogLeNet_Weights.IMAGENET1K_V1"
    unused_upstream_prefixes = ("aux1.", "aux2.", "fc.")
    to_low_level = ("conv1", "maxpool1", "conv2", "conv3")
    to_out = ("maxpool2", "inception3a", "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
              "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b")
    stride16_start, stride32_start = "maxpool3", "maxpool4"

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        # PyTorch's default init: torchvision's truncated-normal one takes seconds and ImageNet weights replace it.
        self._take_modules(GoogLeNet(aux_logits=False, transform_input=False, init_weights=False), output_stride)
        last = self.inception5b
        branch_ends = [[m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1]
                       for branch in (last.branch1, last.branch2, last.branch3, last.branch4)]
        self.feature_info = {
            "low_level": FeatureInfo(self.conv3.conv.out_channels, 4),
            "out": FeatureInfo(sum(conv.out_channels for conv in branch_ends), output_stride),
        }


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
    """torchvision's ``InceptionB`` (``Mixed_6a``) with size-keeping convs and its functional max-pool as a module."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, SizeKeepingConv2d)
        self.branch_pool = CeilMaxPool2d(3, 2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), branch3x3dbl, self.branch_pool(x)]


class ReductionD(InceptionD):
    """torchvision's ``InceptionD`` (``Mixed_7a``) with size-keeping convs and its functional max-pool as a module."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, SizeKeepingConv2d)
        self.branch_pool = CeilMaxPool2d(3, 2)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [branch3x3, branch7x7x3, self.branch_pool(x)]


@register_backbone("inception_v3")
class InceptionV3Backbone(InceptionBackbone):
    """Inception v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016):
    ``"low_level"`` is ``Conv2d_4a_3x3`` (stride 4, 192 channels), ``"out"`` is ``Mixed_7c`` (2048)."""

    upstream = "inception_v3"
    weights_source = "torchvision Inception_V3_Weights.IMAGENET1K_V1"
    unused_upstream_prefixes = ("AuxLogits.", "fc.")
    to_low_level = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
    to_out = ("maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
    stride16_start, stride32_start = "Mixed_6a", "Mixed_7a"

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        blocks = [SizeKeepingConv2d, InceptionA, ReductionB, InceptionC, ReductionD, InceptionE, InceptionAux]
        # PyTorch's default init: torchvision's truncated-normal one takes seconds and ImageNet weights replace it.
        model = Inception3(aux_logits=False, transform_input=False, init_weights=False, inception_blocks=blocks)
        self._take_modules(model, output_stride)
        last = self.Mixed_7c
        parts = (last.branch1x1, last.branch3x3_2a, last.branch3x3_2b, last.branch3x3dbl_3a, last.branch3x3dbl_3b,
                 last.branch_pool)
        self.feature_info = {
            "low_level": FeatureInfo(self.Conv2d_4a_3x3.conv.out_channels, 4),
            "out": FeatureInfo(sum(part.conv.out_channels for part in parts), output_stride),
        }
