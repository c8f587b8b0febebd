"""DeepLabV3+ decoder (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from .layers import conv3x3_bn_relu

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Fuse upsampled ASPP features with 1x1-projected low-level features; two 3x3 convs; 1x1 classifier."""

    def __init__(
        self,
        *,
        low_level_channels: int,
        aspp_channels: int,
        num_classes: int,
        low_level_project_channels: int = 48,
        channels: int = 256,
        separable: bool = True,
    ) -> None:
        super().__init__()
        self.low_level_project = Conv2dNormActivation(low_level_channels, low_level_project_channels, 1)
        self.fuse = nn.Sequential(
            conv3x3_bn_relu(aspp_channels + low_level_project_channels, channels, separable=separable),
            conv3x3_bn_relu(channels, channels, separable=separable),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, aspp_out: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level_project(low_level)
        # Upsample by target size, not by a factor, so odd input sizes line up.
        aspp_out = F.interpolate(aspp_out, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([aspp_out, low_level], dim=1)))
