"""DeepLabV3+ assembly: any registered backbone, ASPP, decoder, upsampling to the input size."""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backbones import build_backbone
from datasets.transforms import check_normalisation

from .aspp import ASPP, default_atrous_rates
from .decoder import Decoder

__all__ = ["DeepLabV3Plus", "build_model", "config_at_output_stride"]


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al., ECCV 2018): logits ``(N, num_classes, H, W)`` for any input ``H x W`` (sides of at
    least :func:`~deeplab.checkpoint.min_input_side` pixels).

    ``config`` holds the constructor's arguments as plain data, so ``DeepLabV3Plus(**model.config)`` rebuilds
    the same architecture (weights aside: ``pretrained_backbone`` is not recorded). Extra keyword arguments go
    to the backbone (e.g. ``width_mult``). ``decoder_convs``, ``low_level_first``, ``align_corners`` and the
    dropouts select the decoder variant (see :class:`~deeplab.models.decoder.Decoder`); ``mean``/``std`` set the
    input normalisation the weights expect (default: the backbone's ImageNet statistics).
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
        decoder_convs: int = 2,
        low_level_first: bool = False,
        align_corners: bool = False,
        aspp_dropout: float = 0.1,
        decoder_dropouts: Sequence[float] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pretrained_backbone: bool | str | Path = False,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        # A numpy integer (mask.max() + 1) would make config no plain data; aspp_channels=0 built and failed at the
        # first forward pass inside a convolution.
        num_classes, aspp_channels, decoder_convs = (_positive_int(name, value) for name, value in (
            ("num_classes", num_classes), ("aspp_channels", aspp_channels), ("decoder_convs", decoder_convs)))
        separable, low_level_first, align_corners = (_flag(name, value) for name, value in (
            ("separable", separable), ("low_level_first", low_level_first), ("align_corners", align_corners)))
        self.backbone = build_backbone(
            backbone, output_stride=output_stride, pretrained=pretrained_backbone, **backbone_kwargs
        )
        output_stride = self.backbone.feature_info["out"].stride  # checked by the backbone, a plain int
        rates = _atrous_rates(atrous_rates) if atrous_rates is not None else default_atrous_rates(output_stride)
        self.aspp = ASPP(
            self.backbone.feature_info["out"].channels,
            atrous_rates=rates,
            out_channels=aspp_channels,
            separable=separable,
            dropout=aspp_dropout,
        )
        dropouts = list(decoder_dropouts) if decoder_dropouts is not None else [0.0] * decoder_convs
        self.decoder = Decoder(
            low_level_channels=self.backbone.feature_info["low_level"].channels,
            aspp_channels=aspp_channels,
            num_classes=num_classes,
            separable=separable,
            num_convs=decoder_convs,
            low_level_first=low_level_first,
            align_corners=align_corners,
            dropouts=dropouts,
        )
        self.mean, self.std = check_normalisation(mean if mean is not None else self.backbone.mean,
                                                  std if std is not None else self.backbone.std)
        self.align_corners = align_corners
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "num_classes": num_classes,
            "output_stride": output_stride,
            "atrous_rates": list(rates),
            "separable": separable,
            "aspp_channels": aspp_channels,
            "decoder_convs": decoder_convs,
            "low_level_first": low_level_first,
            "align_corners": align_corners,
            "aspp_dropout": aspp_dropout,
            "decoder_dropouts": dropouts,
            "mean": list(self.mean),
            "std": list(self.std),
            **backbone_kwargs,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        logits = self.decoder(self.aspp(features["out"]), features["low_level"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)


def config_at_output_stride(config: dict[str, Any], output_stride: int) -> dict[str, Any]:
    """``config`` rebuilt at another output stride: same weights, ASPP rates scaled by the stride ratio.

    Dilation never changes parameter shapes, so weights trained at one stride load at another; the rates scale
    with the feature map ((6, 12, 18) at 16 become (12, 24, 36) at 8), keeping each branch's field of view.
    """
    old = int(config.get("output_stride", 16))
    rates = config.get("atrous_rates") or default_atrous_rates(old)
    scaled = [rate * old / output_stride for rate in rates]
    if any(rate != int(rate) or rate < 1 for rate in scaled):
        raise ValueError(f"atrous rates {list(rates)} at output stride {old} do not scale to {output_stride}")
    return {**config, "output_stride": output_stride, "atrous_rates": [int(rate) for rate in scaled]}


def _positive_int(name: str, value: Any) -> int:
    """``value`` as an int, refused unless a positive integer (a bool, a float or a string of one included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    """``value`` as a bool, refused unless it is one: the string "false" of a config file is true, and built the
    other architecture."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _atrous_rates(rates: Sequence[int]) -> tuple[int, ...]:
    """``rates`` as ints, refused unless positive integers: a string or a 0 would otherwise build, be saved in
    checkpoints, and fail at the first forward pass inside a convolution."""
    if isinstance(rates, (str, bytes)) or not all(
            isinstance(rate, numbers.Integral) and not isinstance(rate, bool) and rate >= 1 for rate in rates):
        raise ValueError(f"atrous_rates must be positive integers, got {rates!r}")
    return tuple(int(rate) for rate in rates)


def build_model(backbone: str = "mobilenetv2", **kwargs: Any) -> DeepLabV3Plus:
    """DeepLabV3+ on ``backbone`` (see :class:`DeepLabV3Plus` for the keywords); ``build_model(**model.config)``
    rebuilds ``model``."""
    return DeepLabV3Plus(backbone, **kwargs)
