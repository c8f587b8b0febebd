"""Conv building blocks shared by the ASPP head and the decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

__all__ = ["ImagePooling", "conv3x3_bn_relu"]


def conv3x3_bn_relu(in_channels: int, out_channels: int, *, dilation: int = 1, separable: bool = True) -> nn.Module:
    """3x3 conv-BN-ReLU, or its depthwise-separable form (depthwise-BN-ReLU, pointwise-BN-ReLU) as in the paper."""
    if not separable:
        return Conv2dNormActivation(in_channels, out_channels, 3, dilation=dilation)
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, 3, dilation=dilation, groups=in_channels),
        Conv2dNormActivation(in_channels, out_channels, 1),
    )


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv-BN-ReLU, broadcast back to the input size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean(dim=(2, 3), keepdim=True))
        if self.training and y.shape[0] == 1:
            # Batch statistics of a single 1x1 value are undefined (BatchNorm raises): use the running ones.
            bn = self.bn
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            y = self.bn(y)
        return self.relu(y).expand(-1, -1, *x.shape[-2:])
