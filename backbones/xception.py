"""Aligned Xception-65 feature extractor built from timm's own model, so timm's ImageNet weights load unchanged."""
from __future__ import annotations

import torch

from .base import FeatureInfo, dilate_for_output_stride
from .registry import register_backbone
from .timm_backbone import TimmBackbone, create_timm_model

__all__ = ["Xception65Backbone"]

# Indices into timm's ``blocks`` (xception65's ``block_cfg``): block 1 takes the features from stride 4 to 8 and
# holds the low-level tap; block 2 is the first to reach stride 16, block 19 the first to reach stride 32.
_LOW_LEVEL_BLOCK, _STRIDE16_START, _STRIDE32_START = 1, 2, 19
# timm.data.IMAGENET_INCEPTION_MEAN / _STD, written out so that registering this backbone does not import timm
# (a test checks they agree).
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)


@register_backbone("xception65")
class Xception65Backbone(TimmBackbone):
    """Aligned Xception-65 (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018).

    The low-level tap is timm's stride-4 feature: the ReLU'd input (256 channels) of block 1's last, strided,
    separable conv, i.e. the DeepLabV3+ paper's entry-flow block-2 feature. ``out`` is the 2048-channel
    exit-flow output.
    """

    mean = INCEPTION_MEAN
    std = INCEPTION_STD
    timm_name = "xception65"
    weights_source = "timm xception65 (Hugging Face hub timm/xception65.ra3_in1k)"
    unused_upstream_prefixes = ("head.",)

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        # timm's default pad_type '' gives symmetric static padding (plain nn.Conv2d), which the dilation
        # helper can recompute; timm's own output_stride is left at 32 so the shared helper does the dilation.
        upstream = create_timm_model(self.timm_name, pretrained=False, num_classes=0)
        self.stem = upstream.stem
        self.blocks = upstream.blocks
        dilate_for_output_stride(
            self.blocks[_STRIDE16_START:], self.blocks[_STRIDE32_START:], output_stride
        )
        low_level_conv = self.blocks[_LOW_LEVEL_BLOCK].stack.conv2.conv_pw
        out_conv = self.blocks[-1].stack.conv3.conv_pw
        self.feature_info = {
            "low_level": FeatureInfo(low_level_conv.out_channels, 4),
            "out": FeatureInfo(out_conv.out_channels, output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.blocks[:_LOW_LEVEL_BLOCK](self.stem(x))
        x, low_level = _forward_with_tap(self.blocks[_LOW_LEVEL_BLOCK], x)
        return {"low_level": low_level, "out": self.blocks[_LOW_LEVEL_BLOCK + 1 :](x)}


def _forward_with_tap(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm ``XceptionModule``'s output and the input of its last (strided) separable conv, the tap; written out
    because timm's own ``forward_with_tap`` only came in its later 1.0 releases (1.0.29 lacks it)."""
    tap = block.stack[:-1](x)
    out = block.stack[-1](tap)
    if block.no_skip:
        return out, tap
    return out + (x if block.shortcut is None else block.shortcut(x)), tap
