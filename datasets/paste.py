"""Copy-paste of one object between training images: the rare class shown in new places and beside new
look-alikes, without new labels (Ghiasi et al., "Simple Copy-Paste", 2021, applied to semantic masks)."""
from __future__ import annotations

import cv2
import numpy as np

from .image_files import IGNORE_INDEX

__all__ = ["paste_object"]

# The void band VOC draws around objects travels with them, so a pasted object keeps its uncertain outline.
_VOID_BAND = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))


def paste_object(
    image: np.ndarray, mask: np.ndarray, source_image: np.ndarray, source_mask: np.ndarray, cls: int,
    rng: np.random.Generator, *, ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` with one connected object of class ``cls`` from the source pasted at a random place
    (randomly flipped and turned by quarter turns), its pixels and labels replacing the target's.

    The object's adjacent void pixels come along, labelled void. New arrays are returned; the inputs are left as
    they were. A source without ``cls``, or an object larger than the target, leaves the target unchanged.
    """
    count, labels = cv2.connectedComponents((source_mask == cls).astype(np.uint8), connectivity=8)
    if count < 2:
        return image, mask
    piece = labels == int(rng.integers(1, count))
    band = cv2.dilate(piece.astype(np.uint8), _VOID_BAND).astype(bool) & (source_mask == ignore_index)
    region = piece | band
    rows, cols = np.nonzero(region)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    patch, patch_mask, patch_region = source_image[box], source_mask[box], region[box]
    turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    patch, patch_mask, patch_region = (_dihedral(a, turns, flip) for a in (patch, patch_mask, patch_region))
    height, width = patch_region.shape
    if height > mask.shape[0] or width > mask.shape[1]:
        return image, mask
    top = int(rng.integers(0, mask.shape[0] - height + 1))
    left = int(rng.integers(0, mask.shape[1] - width + 1))
    image, mask = image.copy(), mask.copy()
    window = (slice(top, top + height), slice(left, left + width))
    image[window][patch_region] = patch[patch_region]
    mask[window][patch_region] = patch_mask[patch_region]
    return image, mask


def _dihedral(array: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """``array`` (HxW or HxWxC) turned by ``turns`` quarter turns, then mirrored left-right if ``flip``."""
    out = np.rot90(array, turns, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if flip else out)
