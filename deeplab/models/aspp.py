"""Atrous Spatial Pyramid Pooling (Chen et al., "Rethinking Atrous Convolution", 2017)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from .layers import ImagePooling, conv3x3_bn_relu

__all__ = ["ASPP", "default_atrous_rates"]


def default_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """The papers' rates (6, 12, 18) at output stride 16, scaled by 16 / output_stride."""
    return tuple(rate * 16 // output_stride for rate in (6, 12, 18))


class ASPP(nn.Module):
    """1x1 branch, one 3x3 atrous branch per rate, image pooling; concatenated and projected to ``out_channels``."""

    def __init__(
        self,
        in_channels: int,
        *,
        atrous_rates: Sequence[int],
        out_channels: int = 256,
        separable: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [Conv2dNormActivation(in_channels, out_channels, 1)]
            + [conv3x3_bn_relu(in_channels, out_channels, dilation=r, separable=separable) for r in atrous_rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            Conv2dNormActivation(out_channels * len(self.branches), out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
