"""DeepLabV3+ decoder (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from .layers import conv3x3_bn_relu

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Fuse upsampled ASPP features with 1x1-projected low-level features; ``num_convs`` 3x3 convs; 1x1 classifier.

    The paper's decoder has two 3x3 convs and concatenates [ASPP, low-level]; ``num_convs=1``,
    ``low_level_first=True``, ``align_corners`` and ``dropouts`` (one rate per 3x3 conv, applied after it in
    training) describe the variants that published PyTorch implementations trained.
    """

    def __init__(
        self,
        *,
        low_level_channels: int,
        aspp_channels: int,
        num_classes: int,
        low_level_project_channels: int = 48,
        channels: int = 256,
        separable: bool = True,
        num_convs: int = 2,
        low_level_first: bool = False,
        align_corners: bool = False,
        dropouts: Sequence[float] = (),
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"the decoder needs at least one 3x3 conv, got num_convs={num_convs}")
        dropouts = list(dropouts) or [0.0] * num_convs
        if len(dropouts) != num_convs:
            raise ValueError(f"need one dropout rate per decoder conv ({num_convs}), got {dropouts}")
        self.low_level_first, self.align_corners = low_level_first, align_corners
        self.low_level_project = Conv2dNormActivation(low_level_channels, low_level_project_channels, 1)
        fused_channels = aspp_channels + low_level_project_channels
        self.fuse = nn.Sequential(*[
            conv3x3_bn_relu(fused_channels if i == 0 else channels, channels, separable=separable)
            for i in range(num_convs)
        ])
        # Parameter-free and kept apart from ``fuse``, so rates never change state-dict names.
        self.dropouts = nn.ModuleList(nn.Dropout(p) if p > 0 else nn.Identity() for p in dropouts)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, aspp_out: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level_project(low_level)
        # Upsample by target size, not by a factor, so odd input sizes line up.
        aspp_out = F.interpolate(aspp_out, size=low_level.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        x = torch.cat([low_level, aspp_out] if self.low_level_first else [aspp_out, low_level], dim=1)
        for conv, dropout in zip(self.fuse, self.dropouts):
            x = dropout(conv(x))
        return self.classifier(x)
