"""What the web app reports about a mask: the share of pixels per class, largest first, with the class colours."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from datasets.image_files import voc_palette

from ..inference.overlay import class_label

__all__ = ["class_shares"]


def class_shares(mask: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, float, str]]:
    """``(class name, percent of pixels, colour as #rrggbb)`` for each class present in ``mask``, largest first."""
    counts = np.bincount(mask.ravel(), minlength=len(class_names))
    palette = voc_palette()
    present = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))
    return [(class_label(class_names, i), 100.0 * counts[i] / mask.size,
             "#{:02x}{:02x}{:02x}".format(*palette[i])) for i in present]
