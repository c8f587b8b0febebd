"""Inception v1 (GoogLeNet) feature extractor with torchvision's module names, so its ImageNet weights load
unchanged.

torchvision's strided max-pools are unpadded with ``ceil_mode``, which gives ``ceil(H / 2)`` rows only at even
``H``; ours (:class:`~backbones.ceil_padding.CeilMaxPool2d`) pad the bottom/right edge, so every feature map has
``ceil(H / stride)`` rows, and equal torchvision's pools wherever those already did (any input whose size is a
multiple of 32, at output stride 32). The auxiliary classifiers and ``fc`` are dropped.

torchvision's ImageNet weights come from a TensorFlow port and are used with ``transform_input=True``, which
turns ImageNet-normalised input into ``(x - 0.5) / 0.5``: we declare that normalisation (mean = std = 0.5)
instead, so the same pixels reach the first conv.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import GoogLeNet

from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .ceil_padding import CeilMaxPool2d
from .registry import register_backbone

__all__ = ["InceptionV1Backbone"]

# torchvision's modules in forward order; "low_level" is conv3's output (stride 4), "out" inception5b's.
_TO_LOW_LEVEL = ("conv1", "maxpool1", "conv2", "conv3")
_TO_OUT = ("maxpool2", "inception3a", "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
           "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b")
_STRIDE16_START, _STRIDE32_START = _TO_OUT.index("maxpool3"), _TO_OUT.index("maxpool4")


@register_backbone("inception_v1")
class InceptionV1Backbone(Backbone):
    """GoogLeNet (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015), torchvision's BatchNorm version."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    upstream = "googlenet"
    weights_source = "torchvision GoogLeNet_Weights.IMAGENET1K_V1"
    unused_upstream_prefixes = ("aux1.", "aux2.", "fc.")

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        # PyTorch's default init: torchvision's truncated-normal one takes seconds and ImageNet weights replace it.
        model = GoogLeNet(aux_logits=False, transform_input=False, init_weights=False)
        for name in (*_TO_LOW_LEVEL, *_TO_OUT):
            module = getattr(model, name)
            if name.startswith("maxpool"):
                module = CeilMaxPool2d(module.kernel_size, module.stride)
            self.add_module(name, module)
        late = [getattr(self, name) for name in _TO_OUT]
        dilate_for_output_stride(late[_STRIDE16_START:], late[_STRIDE32_START:], output_stride)
        self.feature_info = {
            "low_level": FeatureInfo(self.conv3.conv.out_channels, 4),
            "out": FeatureInfo(sum(_branch_channels(self.inception5b)), output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for name in _TO_LOW_LEVEL:
            x = getattr(self, name)(x)
        low_level = x
        for name in _TO_OUT:
            x = getattr(self, name)(x)
        return {"low_level": low_level, "out": x}


def _branch_channels(block: nn.Module) -> list[int]:
    """Output channels of each branch of a torchvision ``Inception`` block (their last conv's)."""
    return [[m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
            for branch in (block.branch1, block.branch2, block.branch3, block.branch4)]
