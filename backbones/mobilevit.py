"""MobileViT feature extractors from timm's models, so timm's ImageNet weights load unchanged.

timm's MobileViT (a ``ByobNet``) takes ``output_stride`` itself and dilates the convs of the stages after it;
the transformer part unfolds 2x2 patches of whatever map it gets. ``"low_level"`` is ``stages.1`` (stride 4),
``"out"`` is ``final_conv`` (640 / 384 channels) after the last stage; ``head`` is dropped. The weights expect
pixels in [0, 1] (mean 0, std 1).

timm's MobileViT block computes its patch grid with ``math.ceil`` and resizes only maps of odd size; a traced
ONNX export bakes both in at the tracing size, and the exported model then fails at other sizes. Each block's
forward is replaced by :func:`_forward_any_size`, the same computation in integer shape arithmetic that
resizes unconditionally while tracing (a bilinear resize to the same size is exact).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureInfo
from .registry import register_backbone
from .timm_backbone import TimmBackbone, create_timm_model

__all__ = ["MobileViTBackbone", "MobileViTS", "MobileViTXS"]

_LOW_LEVEL_STAGES = 2  # stages[:2] end at stride 4


class MobileViTBackbone(TimmBackbone):
    """MobileViT (Mehta & Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision
    Transformer", ICLR 2022); subclasses pick the timm variant."""

    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    unused_upstream_prefixes = ("head.",)

    def __init__(self, *, output_stride: int = 16) -> None:
        super().__init__()
        model = create_timm_model(self.timm_name, output_stride=output_stride, num_classes=0)
        from timm.models.mobilevit import MobileVitBlock  # timm is imported by now

        for block in model.modules():
            if isinstance(block, MobileVitBlock):
                # A partial of a module-level function, unlike a bound method, pickles (torch.save(model)).
                block.forward = functools.partial(_forward_any_size, block)
        self.stem, self.stages, self.final_conv = model.stem, model.stages, model.final_conv
        channels = {info["module"]: info["num_chs"] for info in model.feature_info}
        self.feature_info = {
            "low_level": FeatureInfo(channels[f"stages.{_LOW_LEVEL_STAGES - 1}"], 4),
            "out": FeatureInfo(channels["final_conv"], output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.stages[:_LOW_LEVEL_STAGES](self.stem(x))
        return {"low_level": low_level, "out": self.final_conv(self.stages[_LOW_LEVEL_STAGES:](low_level))}


def _forward_any_size(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's ``MobileVitBlock.forward`` in traceable form: local convs, unfold into patches, transformer, fold."""
    shortcut = x
    x = block.conv_1x1(block.conv_kxk(x))
    patch_h, patch_w = block.patch_size
    batch, channels, height, width = x.shape
    rows, cols = (height + patch_h - 1) // patch_h, (width + patch_w - 1) // patch_w
    resize = torch.jit.is_tracing() or rows * patch_h != height or cols * patch_w != width
    if resize:
        x = F.interpolate(x, size=(rows * patch_h, cols * patch_w), mode="bilinear", align_corners=False)
    # (B, C, H, W) -> (B * P, N, C) with P = patch_h * patch_w pixels per patch and N = rows * cols patches.
    x = x.reshape(batch * channels * rows, patch_h, cols, patch_w).transpose(1, 2)
    x = x.reshape(batch, channels, rows * cols, block.patch_area).transpose(1, 3)
    x = block.norm(block.transformer(x.reshape(batch * block.patch_area, rows * cols, -1)))
    x = x.contiguous().view(batch, block.patch_area, rows * cols, -1)
    x = x.transpose(1, 3).reshape(batch * channels * rows, cols, patch_h, patch_w)
    x = x.transpose(1, 2).reshape(batch, channels, rows * patch_h, cols * patch_w)
    if resize:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    x = block.conv_proj(x)
    if block.conv_fusion is not None:
        x = block.conv_fusion(torch.cat((shortcut, x), dim=1))
    return x


def _variant(class_name: str, timm_name: str) -> type[MobileViTBackbone]:
    """A subclass bound to one timm variant, so weight errors name it."""
    attributes = {
        "__doc__": f"MobileViT (timm ``{timm_name}``).",
        "__module__": __name__,
        "timm_name": timm_name,
        "weights_source": f"timm {timm_name} (Hugging Face hub timm/{timm_name}.cvnets_in1k)",
    }
    return type(class_name, (MobileViTBackbone,), attributes)


MobileViTS = register_backbone("mobilevit_s")(_variant("MobileViTS", "mobilevit_s"))
MobileViTXS = register_backbone("mobilevit_xs")(_variant("MobileViTXS", "mobilevit_xs"))
