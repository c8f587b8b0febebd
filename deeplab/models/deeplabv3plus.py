"""DeepLabV3+ assembly: any registered backbone, ASPP, decoder, upsampling to the input size."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backbones import build_backbone

from .aspp import ASPP, default_atrous_rates
from .decoder import Decoder

__all__ = ["DeepLabV3Plus", "build_model"]


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al., ECCV 2018): logits ``(N, num_classes, H, W)`` for any input ``H x W``.

    ``config`` holds the constructor's arguments as plain data, so ``DeepLabV3Plus(**model.config)`` rebuilds
    the same architecture (weights aside: ``pretrained_backbone`` is not recorded). Extra keyword arguments go
    to the backbone (e.g. ``width_mult``).
    """

    def __init__(
        self,
        backbone: str = "mobilenetv2",
        *,
        num_classes: int = 21,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        separable: bool = True,
        aspp_channels: int = 256,
        pretrained_backbone: bool | str | Path = False,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        rates = tuple(atrous_rates) if atrous_rates is not None else default_atrous_rates(output_stride)
        self.backbone = build_backbone(
            backbone, output_stride=output_stride, pretrained=pretrained_backbone, **backbone_kwargs
        )
        self.aspp = ASPP(
            self.backbone.feature_info["out"].channels,
            atrous_rates=rates,
            out_channels=aspp_channels,
            separable=separable,
        )
        self.decoder = Decoder(
            low_level_channels=self.backbone.feature_info["low_level"].channels,
            aspp_channels=aspp_channels,
            num_classes=num_classes,
            separable=separable,
        )
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "num_classes": num_classes,
            "output_stride": output_stride,
            "atrous_rates": list(rates),
            "separable": separable,
            "aspp_channels": aspp_channels,
            **backbone_kwargs,
        }

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


def build_model(backbone: str = "mobilenetv2", **kwargs: Any) -> DeepLabV3Plus:
    """DeepLabV3+ on ``backbone`` (see :class:`DeepLabV3Plus` for the keywords); ``build_model(**model.config)``
    rebuilds ``model``."""
    return DeepLabV3Plus(backbone, **kwargs)
