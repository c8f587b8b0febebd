"""Size-keeping convs and max-pools: ceil(H / stride) rows at every size, the unpadded layer's output in their
top-left corner, torchvision's ceil_mode pools at even sizes, and the same size once dilated."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones import dilate_for_output_stride
from backbones.ceil_padding import CeilConv2d, CeilMaxPool2d


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("size", [6, 7, 8, 9])
def test_max_pool_rounds_up_and_keeps_the_unpadded_windows(kernel: int, size: int) -> None:
    x = torch.randn(1, 4, size, size + 3)
    y = CeilMaxPool2d(kernel, 2)(x)
    assert y.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 3) / 2))
    unpadded = F.max_pool2d(x, kernel, 2)
    assert torch.equal(y[..., : unpadded.shape[-2], : unpadded.shape[-1]], unpadded)


@pytest.mark.parametrize("kernel", [2, 3])
def test_max_pool_equals_ceil_mode_pool_at_even_sizes(kernel: int) -> None:
    """torchvision's GoogLeNet pools: unpadded, ceil_mode."""
    x = torch.randn(1, 4, 10, 14)
    assert torch.equal(CeilMaxPool2d(kernel, 2)(x), F.max_pool2d(x, kernel, 2, ceil_mode=True))


@pytest.mark.parametrize("size", [6, 7, 8, 9])
def test_strided_conv_rounds_up_and_keeps_the_unpadded_windows(size: int) -> None:
    conv = CeilConv2d(3, 5, 3, stride=2)
    x = torch.randn(1, 3, size, size + 1)
    y = conv(x)
    assert y.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
    unpadded = F.conv2d(x, conv.weight, conv.bias, stride=2)
    assert torch.allclose(y[..., : unpadded.shape[-2], : unpadded.shape[-1]], unpadded, atol=1e-6)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_layers_keep_the_size(output_stride: int) -> None:
    layers = nn.Sequential(CeilConv2d(3, 4, 3, stride=2), CeilMaxPool2d(3, 2), CeilMaxPool2d(2, 2))
    dilate_for_output_stride(layers, layers, output_stride)
    assert layers[0].stride == (1, 1) and layers[0].dilation == ((2, 2) if output_stride == 16 else (4, 4))
    assert layers(torch.randn(1, 3, 9, 14)).shape == (1, 4, 9, 14)
