"""Joint image/mask transforms (albumentations) ending in tensors; mean/std always come from the backbone."""
from __future__ import annotations

import os
from typing import Sequence

# albumentations otherwise asks PyPI for a newer version on import; we never touch the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["SegmentationTransform", "build_eval_transform", "build_train_transform"]


class SegmentationTransform:
    """Apply an albumentations pipeline to (image, mask), return (float32 3xHxW, int64 HxW); picklable."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def set_seed(self, seed: int) -> None:
        """Reseed the random augmentations, so a sample's augmentation can depend on (seed, step) alone."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pipeline(image=image, mask=mask)
        image_t = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
        mask_t = torch.from_numpy(np.ascontiguousarray(out["mask"]).astype(np.int64))
        return image_t, mask_t

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def build_train_transform(
    *,
    crop_size: int = 512,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.5, 2.0),
    ignore_index: int = 255,
) -> SegmentationTransform:
    """DeepLab training augmentation: random scale, pad (image with the mean, mask with ignore), crop, flip, normalise.

    Masks are always resampled nearest-neighbour so they keep only their original label values.
    """
    if crop_size < 1 or not 0 < scale[0] <= scale[1]:
        raise ValueError(f"need crop_size >= 1 and 0 < scale[0] <= scale[1], got {crop_size}, {scale}")
    # The pad value is the mean so padded pixels normalise to zero, like a zero-padded input.
    fill = tuple(255.0 * m for m in mean)
    pipeline = A.Compose([
        A.RandomScale(
            scale_limit=(scale[0] - 1.0, scale[1] - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        A.PadIfNeeded(
            min_height=crop_size, min_width=crop_size, border_mode=cv2.BORDER_CONSTANT,
            fill=fill, fill_mask=ignore_index,
        ),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=0.5),
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
    ])
    return SegmentationTransform(pipeline)


def build_eval_transform(*, mean: Sequence[float], std: Sequence[float]) -> SegmentationTransform:
    """Evaluation transform: full image, only normalisation."""
    pipeline = A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)])
    return SegmentationTransform(pipeline)
