"""Image/mask transforms ending in tensors: albumentations augmentation for training, plain normalisation
for evaluation and prediction. Mean and std always come from the model, never from a global constant."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .image_files import IGNORE_INDEX, check_rgb_array

if TYPE_CHECKING:
    import albumentations as A

__all__ = ["COLOR_JITTER", "NormalizeTransform", "SegmentationTransform", "build_eval_transform",
           "build_train_transform", "check_normalisation", "normalize_image"]

#: Strengths of the training colour jitter (albumentations ``ColorJitter``): any hue, so colour alone cannot name a
#: class, and moderate saturation, brightness and contrast changes that keep shapes visible.
COLOR_JITTER = {"brightness": 0.25, "contrast": 0.25, "saturation": 0.4, "hue": 0.5}


def check_normalisation(mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` as three floats each; ValueError unless finite, with a positive std and a mean of pixels
    scaled to [0, 1]: mmsegmentation's 0..255 values (mean 123.675...) made every input nearly constant, and every
    mask one class, without a word."""
    checked = []
    for name, values in (("mean", mean), ("std", std)):
        try:
            floats = () if isinstance(values, (str, bytes)) else tuple(float(v) for v in values)
        except (TypeError, ValueError):
            floats = ()
        if len(floats) != 3 or not all(math.isfinite(v) for v in floats):
            raise ValueError(f"{name} needs three finite numbers, one per RGB channel, got {values!r}")
        checked.append(floats)
    if min(checked[1]) <= 0:
        raise ValueError(f"std must be positive, got {list(checked[1])}")
    if not all(0.0 <= v <= 1.0 for v in checked[0]):
        raise ValueError(f"mean {list(checked[0])} is not of pixels scaled to [0, 1]: divide a mean and std given "
                         "for 0..255 pixels by 255")
    return checked[0], checked[1]


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``HxWx3`` RGB -> float32 ``3xHxW`` holding ``(x / 255 - mean) / std``, the model's input; ValueError for
    any other array (see :func:`~datasets.image_files.check_rgb_array`)."""
    check_rgb_array(image)
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    offset = np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    out = image.astype(np.float32) * scale - offset
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


class NormalizeTransform:
    """(image, mask) -> (normalised float32 3xHxW, int64 HxW) at full size: evaluation's transform; picklable."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_image(image, self.mean, self.std), torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class SegmentationTransform:
    """Apply an albumentations pipeline to (image, mask), return (float32 3xHxW, int64 HxW); picklable.

    ``focus_class`` reaches the pipeline's crop: a class id centres the crop on one of that class's pixels,
    -1 (no focus) leaves it random. In a DataLoader worker it draws from the worker's seed (new every epoch) unless
    :meth:`set_seed` seeds it in that worker.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline
        self._seeded_in: int | None = None  # the seed of the DataLoader worker whose draws the state follows

    def set_seed(self, seed: int) -> None:
        """Reseed the random augmentations, so a sample's augmentation can depend on (seed, step) alone."""
        self.pipeline.set_random_seed(seed)
        self._seeded_in = _worker_seed()

    def _follow_worker_seed(self) -> None:
        """Reseed from the DataLoader worker's seed unless seeded in this worker: the pipeline's random state lives
        outside the global RNGs that PyTorch seeds per worker, so forked workers would each repeat the parent's
        draws, the same augmentations in every worker and every epoch."""
        seed = _worker_seed()
        if seed is not None and seed != self._seeded_in:
            self.pipeline.set_random_seed(seed)
            self._seeded_in = seed

    def __call__(self, image: np.ndarray, mask: np.ndarray, focus_class: int = -1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        check_rgb_array(image)  # Normalize divides by 255: float pixels in [0, 1] would all but vanish
        self._follow_worker_seed()
        out = self.pipeline(image=image, mask=mask, focus_class=focus_class)
        image_t = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
        mask_t = torch.from_numpy(np.ascontiguousarray(out["mask"]).astype(np.int64))
        return image_t, mask_t

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def _worker_seed() -> int | None:
    """The seed PyTorch gave this DataLoader worker (a new one every epoch), None outside a worker."""
    worker = torch.utils.data.get_worker_info()
    return None if worker is None else worker.seed


def build_train_transform(
    *,
    crop_size: int = 512,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.5, 2.0),
    ignore_index: int = IGNORE_INDEX,
    color_jitter: float = 0.0,
    any_orientation: bool = False,
) -> SegmentationTransform:
    """DeepLab training augmentation: random scale, pad (image with the mean, mask with ignore), crop, flip, normalise.

    Masks are always resampled nearest-neighbour so they keep only their original label values.
    ``color_jitter`` is the probability per sample of a strong colour jitter of the image alone (hue anywhere on the
    colour wheel, saturation, brightness and contrast), so a class's colour stops being a reliable cue and the model
    has to learn its shape; 0 leaves the pipeline, and its random draws, exactly as without it.
    ``any_orientation`` replaces the left-right mirror with one of all eight mirrors and quarter turns of the crop
    (albumentations ``D4``), for images with no up or down (aerial, microscopy): more views of each rare object.
    """
    if crop_size < 1 or not 0 < scale[0] <= scale[1]:
        raise ValueError(f"need crop_size >= 1 and 0 < scale[0] <= scale[1], got {crop_size}, {scale}")
    mean, std = check_normalisation(mean, std)
    if not 0.0 <= color_jitter <= 1.0:
        raise ValueError(f"need 0 <= color_jitter <= 1, got {color_jitter}")
    # albumentations otherwise asks PyPI for a newer version on import; we never touch the network.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A  # deferred: prediction and evaluation never augment
    import cv2

    from .crops import ClassFocusedCrop

    # The pad value is the mean so padded pixels normalise to zero, like a zero-padded input.
    fill = tuple(255.0 * m for m in mean)
    # First, on the photo alone: after the pad it would shift the padding's colour away from the mean.
    jitter = [A.ColorJitter(**COLOR_JITTER, p=color_jitter)] if color_jitter > 0 else []
    pipeline = A.Compose([
        *jitter,
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
        ClassFocusedCrop(height=crop_size, width=crop_size),
        A.D4(p=1.0) if any_orientation else A.HorizontalFlip(p=0.5),  # after the crop, which is square
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
    ])
    return SegmentationTransform(pipeline)


def build_eval_transform(*, mean: Sequence[float], std: Sequence[float]) -> NormalizeTransform:
    """Evaluation transform: the full image, only normalised (``mean`` and ``std`` checked by
    :func:`check_normalisation`)."""
    return NormalizeTransform(*check_normalisation(mean, std))
