"""MobileNetV4 feature extractors from timm's models, so timm's ImageNet weights load unchanged.

timm builds MobileNetV4 for an output stride only as a feature extractor (``features_only=True``): its block
builder dilates the blocks after the requested stride (attention blocks keep their strided key/value
downsampling). We take that model's modules. ``"low_level"`` is ``blocks.0`` (stride 4), ``"out"`` is
``blocks.4``, the 960-channel 1x1 conv that ends timm's feature stack; the classifier's ``conv_head``/
``norm_head``/``classifier`` are dropped from the upstream state dict.
"""
from __future__ import annotations

import torch

from .base import FeatureInfo
from .registry import register_backbone
from .timm_backbone import TimmBackbone, create_timm_model

__all__ = ["MobileNetV4Backbone", "MobileNetV4ConvMedium", "MobileNetV4ConvSmall", "MobileNetV4HybridMedium"]

_LOW_LEVEL_BLOCKS = 1  # blocks[:1] end at stride 4


class MobileNetV4Backbone(TimmBackbone):
    """MobileNetV4 (Qin et al., "MobileNetV4: Universal Models for the Mobile Ecosystem", ECCV 2024); subclasses
    pick the timm variant."""

    unused_upstream_prefixes = ("conv_head.", "norm_head.", "classifier.")

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        features = create_timm_model(self.timm_name, features_only=True, output_stride=output_stride)
        self.conv_stem, self.bn1, self.act1, self.blocks = (
            features.conv_stem, features.bn1, features.act1, features.blocks
        )
        channels = {info["module"]: info["num_chs"] for info in features.feature_info.get_dicts()}
        self.feature_info = {
            "low_level": FeatureInfo(channels[f"blocks.{_LOW_LEVEL_BLOCKS - 1}"], 4),
            "out": FeatureInfo(channels[f"blocks.{len(self.blocks) - 1}"], output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.blocks[:_LOW_LEVEL_BLOCKS](self.act1(self.bn1(self.conv_stem(x))))
        return {"low_level": low_level, "out": self.blocks[_LOW_LEVEL_BLOCKS:](low_level)}


class _HybridBackbone(MobileNetV4Backbone):
    """The hybrids' attention blocks at stride 16 halve their keys and values once more (timm's ``kv_stride``)."""

    @classmethod
    def smallest_training_crop(cls, output_stride: int) -> int:
        """Crops that leave the stride-16 stage's map at least 3 cells wide, so its halved keys are at least 2x2."""
        return max(output_stride + 1, 2 * min(output_stride, 16) + 1)


def _variant(timm_name: str, weights_tag: str) -> type[MobileNetV4Backbone]:
    """A subclass bound to one timm variant, so weight errors name it."""
    base = _HybridBackbone if "hybrid" in timm_name else MobileNetV4Backbone
    words = timm_name.removeprefix("mobilenetv4_").split("_")
    attributes = {
        "__doc__": f"MobileNetV4 {' '.join(words)} (timm ``{timm_name}``).",
        "__module__": __name__,
        "timm_name": timm_name,
        "weights_source": f"timm {timm_name} (Hugging Face hub timm/{timm_name}.{weights_tag})",
    }
    return type("MobileNetV4" + "".join(w.capitalize() for w in words), (base,), attributes)


MobileNetV4ConvSmall = register_backbone("mobilenetv4_conv_small")(
    _variant("mobilenetv4_conv_small", "e2400_r224_in1k"))
MobileNetV4ConvMedium = register_backbone("mobilenetv4_conv_medium")(
    _variant("mobilenetv4_conv_medium", "e500_r256_in1k"))
MobileNetV4HybridMedium = register_backbone("mobilenetv4_hybrid_medium")(
    _variant("mobilenetv4_hybrid_medium", "e200_r256_in12k_ft_in1k"))
