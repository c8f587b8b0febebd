"""Convs and max-pools whose output has ``ceil(H / stride)`` rows at any input size and any stride, for networks
whose reductions were designed unpadded (Inception) or whose pool kernels are even.

An unpadded 3x3 stride-2 layer gives ``floor((H - 3) / 2) + 1`` rows, one short of ``ceil(H / 2)`` at odd
``H``. These layers add to their own symmetric ``padding`` whatever bottom/right padding is still missing,
``dilation * (kernel - 1) - 2 * padding``: strided and unpadded, their windows start where the unpadded layer's
do, so their output is the unpadded one plus the missing last rows and columns. Once the dilation helper has
turned them into stride 1 with symmetric padding, odd kernels need nothing more and even ones (2x2 pools) one
extra row and column.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = ["CeilConv2d", "CeilMaxPool2d"]


def _missing_padding(module: nn.Conv2d | nn.MaxPool2d) -> tuple[int, int, int, int]:
    """``F.pad`` widths (bottom/right only) that complete ``module``'s padding to ``dilation * (kernel - 1)``."""
    (kh, kw), (dh, dw) = _pair(module.kernel_size), _pair(module.dilation)
    ph, pw = _pair(module.padding)
    return (0, dw * (kw - 1) - 2 * pw, 0, dh * (kh - 1) - 2 * ph)


class CeilConv2d(nn.Conv2d):
    """``nn.Conv2d`` that zero-pads bottom/right as needed so its output has ``ceil(H / stride)`` rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = _missing_padding(self)
        return super().forward(F.pad(x, pad) if any(pad) else x)


class CeilMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pads bottom/right as needed so its output has ``ceil(H / stride)`` rows; unpadded at
    stride 2 and even ``H`` it equals an unpadded ``ceil_mode`` pool (GoogLeNet's) exactly.

    The padding repeats the last row and column: every window holding a padded pixel also holds the one it copies,
    so the maximum is that of the real pixels, as with ``-inf``, but stays finite where int8 calibration records
    the padded map's range (an infinite one gave ONNX Runtime infinite scales)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = _missing_padding(self)
        return super().forward(F.pad(x, pad, mode="replicate") if any(pad) else x)
