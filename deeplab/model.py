"""DeepLabV3+ assembly: any registered backbone, ASPP, decoder, upsampling to the input size."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backbones import Backbone, build_backbone

from .aspp import ASPP, default_atrous_rates
from .decoder import Decoder

__all__ = ["DeepLabV3Plus", "build_model"]


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al., ECCV 2018): logits ``(N, num_classes, H, W)`` for any input ``H x W``."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        atrous_rates: Sequence[int],
        separable: bool = True,
        aspp_channels: int = 256,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(
            backbone.feature_info["out"].channels,
            atrous_rates=atrous_rates,
            out_channels=aspp_channels,
            separable=separable,
        )
        self.decoder = Decoder(
            low_level_channels=backbone.feature_info["low_level"].channels,
            aspp_channels=aspp_channels,
            num_classes=num_classes,
            separable=separable,
        )
        #: Keyword arguments of :func:`build_model` that rebuild this model (set by ``build_model``).
        self.config: dict[str, Any] = {}

    @property
    def mean(self) -> tuple[float, float, float]:
        """Input normalisation mean the backbone's weights expect."""
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, float, float]:
        """Input normalisation std the backbone's weights expect."""
        return self.backbone.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        logits = self.decoder(self.aspp(features["out"]), features["low_level"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_model(
    backbone: str = "mobilenetv2",
    num_classes: int = 21,
    output_stride: int = 16,
    pretrained_backbone: bool | str | Path = False,
    *,
    atrous_rates: Sequence[int] | None = None,
    separable: bool = True,
    **backbone_kwargs: Any,
) -> DeepLabV3Plus:
    """Build DeepLabV3+ on ``backbone``; extra keyword arguments go to the backbone (e.g. ``width_mult``).

    ``model.config`` holds plain data from which ``build_model(**model.config)`` rebuilds the same
    architecture (weights aside: ``pretrained_backbone`` is not recorded).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    rates = tuple(atrous_rates) if atrous_rates is not None else default_atrous_rates(output_stride)
    model = DeepLabV3Plus(
        build_backbone(backbone, output_stride=output_stride, pretrained=pretrained_backbone, **backbone_kwargs),
        num_classes=num_classes,
        atrous_rates=rates,
        separable=separable,
    )
    model.config = {
        "backbone": backbone,
        "num_classes": num_classes,
        "output_stride": output_stride,
        "atrous_rates": list(rates),
        "separable": separable,
        **backbone_kwargs,
    }
    return model
