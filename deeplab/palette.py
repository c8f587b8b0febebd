"""The PASCAL VOC colour map, used for palette PNG masks and overlays."""
from __future__ import annotations

import numpy as np

__all__ = ["voc_palette"]


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """``(num_colors, 3)`` uint8 RGB colours of the VOC devkit's ``labelcolormap`` (bits of the id interleaved)."""
    ids = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> channel) & 1
            palette[:, channel] |= (bit << (7 - shift)).astype(np.uint8)
        ids = ids >> 3
    return palette
