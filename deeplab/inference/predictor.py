"""From a photo to a class mask: the checkpoint's model behind an engine, with the normalisation, resizing and
argmax around it. The one path from a decoded image to a mask, for every tool and the Python API."""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from datasets import DataError
from datasets.image_files import check_rgb_array
from datasets.transforms import check_normalisation, normalize_image

from ..checkpoint import (
    MAX_CLASSES, check_class_name_list, load_checkpoint, min_input_side, model_from_checkpoint, read_checkpoint_bytes,
)
from ..device import resolve_device
from ..errors import UserError
from ..tool_args import check_ranges
from .calibration import choose_calibration
from .prepared import checkpoint_engine
from .tta import Engine, check_engine, class_scores

__all__ = ["Prediction", "Predictor", "check_model_size", "default_batch_size", "prepare_image", "shrink_to",
           "shrunk_size", "upsample_argmax"]

#: Images per engine call where batching paid: a GPU fills up with batches; on 2 CPU cores fp32 ONNX Runtime and
#: eager torch measured no faster in batches; ONNX Runtime int8 about 1.3x in an earlier measurement, but not in the
#: README's engines table on the AVX-512 Zen 5 (58.8 img/s at batch 8 against 63 one at a time).
_BATCH_SIZES = {"cuda": 8, "int8": 4}


@dataclass(frozen=True)
class Prediction:
    """A class-id mask (uint8 HxW, the image's size) and the ``(h, w)`` the model saw (smaller for huge photos)."""

    mask: np.ndarray
    model_size: tuple[int, int]


class Predictor:
    """A prepared engine plus what feeds it (normalisation, ``max_size``) and names its output (class names).

    Build one with :meth:`from_checkpoint`; call :meth:`predict` on uint8 RGB images of any size.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        max_size: int | None = None,
        engine_name: str = "custom",
        model_config: dict | None = None,
        engine_choice: str | None = None,
        min_side: int = 1,
        flip: bool = False,
        any_orientation: bool = False,
    ) -> None:
        check_engine(engine)
        self.engine = engine
        self.engine_name = engine_name
        #: For ``engine="auto"`` on the CPU: one line naming the engine chosen and why (tools print it).
        self.engine_choice = engine_choice
        self.model_config = dict(model_config or {})
        check_class_name_list(class_names, flag="class_names")
        self.class_names = list(class_names)
        self.mean, self.std = check_normalisation(mean, std)
        self.device = device
        self.max_size = _checked_max_size(max_size)
        #: The fewest pixels a side of the model's input may have (see :func:`~deeplab.checkpoint.min_input_side`).
        self.min_side = min_side
        #: The test-time views :meth:`predict` averages unless told otherwise (see
        #: :func:`~deeplab.inference.tta.predict_probabilities`).
        self.flip, self.any_orientation = flip, any_orientation

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        engine: str = "auto",
        class_names: Sequence[str] | None = None,
        max_size: int | None = None,
        calibration: Sequence[str | Path] | None = None,
        fallback_calibration: Sequence[str | Path] = (),
        output_stride: int | None = None,
        flip: bool = False,
        any_orientation: bool = False,
    ) -> Predictor:
        """Rebuild the model of checkpoint ``path`` alone; names from the checkpoint, else ``class_names``, else ids.

        Normalisation comes from the checkpoint's ``mean``/``std`` when saved, else from the model's config.
        Exported, converted and calibrated engines are cached (see :mod:`deeplab.inference.cache`); a cached one
        loads without rebuilding the PyTorch model. The int8 engines calibrate on the image files ``calibration``,
        else on the checkpoint's own training images when they are on this machine, else on
        ``fallback_calibration`` (the images to predict; never for ``auto``, whose choice would then depend on
        them). ``auto`` on the CPU is the fastest engine verified to keep the answer on the checkpoint's validation
        images (:mod:`deeplab.inference.auto`); :attr:`engine_choice` says which and why.
        ``output_stride`` runs the weights at another stride; ``flip`` and ``any_orientation`` are the test-time
        views :meth:`predict` averages by default.
        """
        _checked_max_size(max_size)  # before the model is rebuilt and its engine prepared
        check_class_name_list(class_names, flag="class_names")
        named = _image_files(calibration, "calibration")
        fallback = _image_files(fallback_calibration, "fallback_calibration")
        data = read_checkpoint_bytes(path)  # the engine cache's key hashes exactly the bytes loaded
        ckpt = load_checkpoint(path, data=data)
        # Hashed only by engines that use the cache (not the PyTorch ones); the bytes go when this call returns.
        sha256 = functools.cache(lambda: hashlib.sha256(data).hexdigest())
        model = functools.cache(lambda: model_from_checkpoint(ckpt, path, output_stride=output_stride))
        config = dict(ckpt["model_config"])
        variant = None
        if output_stride is not None and output_stride != config.get("output_stride"):
            config, variant = model().config, f"output_stride={output_stride}"
        num_classes = int(config.get("num_classes", 21))
        names = list(ckpt.get("class_names") or class_names or [str(i) for i in range(num_classes)])
        if len(names) != num_classes:
            raise UserError(f"{path}: model predicts {num_classes} classes but {len(names)} class names were given")
        mean = tuple(float(v) for v in (ckpt["mean"] if "mean" in ckpt else model().mean))
        std = tuple(float(v) for v in (ckpt["std"] if "std" in ckpt else model().std))
        resolved = resolve_device(device)
        images = choose_calibration(named, ckpt, [] if engine == "auto" else fallback)
        min_side = min_input_side(config)
        prepare = functools.partial(prepare_image, mean=mean, std=std, max_size=max_size, min_side=min_side)
        prepared = checkpoint_engine(path, ckpt, sha256, model, engine=engine, device=resolved, calibration=images,
                                     prepare=prepare, max_size=max_size, variant=variant)
        return cls(prepared.run, class_names=names, mean=mean, std=std, device=resolved, max_size=max_size,
                   engine_name=prepared.name, model_config=config, engine_choice=prepared.choice, min_side=min_side,
                   flip=flip, any_orientation=any_orientation)

    @property
    def batch_size(self) -> int:
        """Images per engine call that suit this engine and device (see :func:`default_batch_size`)."""
        return default_batch_size(self.engine_name, self.device)

    def check_size(self, image: np.ndarray, name: str | Path = "image") -> None:
        """DataError naming ``name`` when ``image``, once shrunk to ``max_size``, has a side shorter than the model
        takes (see :func:`check_model_size`)."""
        check_model_size(image, max_size=self.max_size, min_side=self.min_side, name=name)

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """The model's input for one uint8 RGB image: shrunk to ``max_size`` if larger, normalised, batch of 1;
        DataError when it is too small for the model."""
        return prepare_image(image, mean=self.mean, std=self.std, max_size=self.max_size, min_side=self.min_side)

    def predict(self, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool | None = None,
                any_orientation: bool | None = None) -> Prediction:
        """Class-id mask of one uint8 RGB image at its own size (scores upsampled back when it was shrunk); ``flip``
        and ``any_orientation`` choose the averaged views (see :func:`~deeplab.inference.tta.predict_probabilities`),
        None the predictor's own."""
        return self.predict_batch([image], scales=scales, flip=flip, any_orientation=any_orientation)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], *, scales: Sequence[float] = (1.0,), flip: bool | None = None,
        any_orientation: bool | None = None
    ) -> list[Prediction]:
        """:meth:`predict` of each image, in order; images of one model size go through the engine as one batch.

        Images of different sizes are never padded to a common one: padding would change the masks near borders.
        """
        flip = self.flip if flip is None else flip
        any_orientation = self.any_orientation if any_orientation is None else any_orientation
        inputs = [self.prepare(image) for image in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, tensor in enumerate(inputs):
            by_size.setdefault(tuple(tensor.shape[-2:]), []).append(index)
        predictions: list[Prediction | None] = [None] * len(images)
        with torch.inference_mode():
            for size, indices in by_size.items():
                scores = class_scores(self.engine, torch.cat([inputs[i] for i in indices]), scales=scales, flip=flip,
                                      any_orientation=any_orientation, min_side=self.min_side)
                self._check_class_count(scores.shape[1])
                for row, index in enumerate(indices):
                    mask = upsample_argmax(scores[row : row + 1], images[index].shape[:2])
                    predictions[index] = Prediction(mask=mask.cpu().numpy(), model_size=size)
        return predictions

    def _check_class_count(self, scored: int) -> None:
        """ValueError when the engine scores another number of classes than :attr:`class_names` names: the masks'
        ids would be shown and reported under other classes' names (VOC's 21 given for a 5-class model)."""
        if scored != len(self.class_names):
            raise ValueError(f"class_names: {len(self.class_names)} names, but the engine scores {scored} classes")


def default_batch_size(engine: str, device: str | torch.device = "cpu") -> int:
    """Images per engine call for the concrete ``engine`` on ``device``: 8 on a GPU, 4 for int8, else 1."""
    if torch.device(device).type == "cuda":
        return _BATCH_SIZES["cuda"]
    return _BATCH_SIZES.get(engine, 1)


def prepare_image(image: np.ndarray, *, mean: Sequence[float], std: Sequence[float],
                  max_size: int | None, min_side: int = 1) -> torch.Tensor:
    """One uint8 RGB image as a model input: shrunk to ``max_size`` if larger, normalised, a batch of one;
    DataError when a side of it is then shorter than ``min_side``; ValueError for any other array (see
    :func:`datasets.image_files.check_rgb_array`)."""
    check_rgb_array(image)
    check_model_size(image, max_size=max_size, min_side=min_side)
    return normalize_image(shrink_to(image, max_size), mean, std)[None]


def check_model_size(image: np.ndarray, *, max_size: int | None, min_side: int, name: str | Path = "image") -> None:
    """DataError naming ``name`` when ``image``, once shrunk to ``max_size``, has a side shorter than ``min_side``
    (a network's convs would fail on it with an error that names no image)."""
    height, width = shrunk_size(image.shape[:2], max_size)
    if min(height, width) < min_side:
        shrunk = "" if (height, width) == image.shape[:2] else f", {width}x{height} once shrunk for the model"
        raise DataError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels{shrunk}: too small for this model, "
                        f"which needs at least {min_side} pixels a side")


def _image_files(paths: Sequence[str | Path] | None, name: str) -> list[Path]:
    """``paths`` as paths; one string or path is refused: its letters were taken for files ('/: is a folder')."""
    if isinstance(paths, (str, os.PathLike)):
        raise UserError(f"{name} {paths}: takes a list of image files, not one path; datasets.list_images(folder) "
                        "lists a folder's")
    return [Path(p) for p in paths or ()]


def _checked_max_size(max_size: int | None) -> int | None:
    """``max_size`` when it is a usable limit (None or 0: none), else a UserError: a negative one shrank every image
    to 1x1 pixels, and the mask to a single class, without a word."""
    check_ranges({"max_size": max_size}, at_least_zero=["max_size"])
    return max_size


def shrink_to(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """``image`` scaled down (area interpolation) so its long side is at most ``max_size``; unchanged if smaller."""
    size = shrunk_size(image.shape[:2], max_size)
    if size == image.shape[:2]:
        return image
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


def shrunk_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """``(height, width)`` scaled down so the long side is at most ``max_size`` (no side under 1); unchanged if
    smaller; a negative ``max_size`` is a UserError."""
    height, width = size
    if not _checked_max_size(max_size) or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def upsample_argmax(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 argmax ``(H, W)`` of ``(1, C, h, w)`` scores bilinearly resized to ``size``, with no ``C x H x W`` buffer.

    Masks are 8-bit PNGs with 255 = void, so ids are uint8 (at most 255 classes), which also keeps the
    full-resolution buffers of a large photo small.
    """
    if scores.ndim != 4 or scores.shape[0] != 1:  # another image of a batch would be dropped without a word
        raise ValueError(f"expected the (1, C, h, w) scores of one image, got shape {tuple(scores.shape)}; pass "
                         "scores[i : i + 1] for image i of a batch")
    if scores.shape[1] > MAX_CLASSES:
        raise ValueError(f"at most {MAX_CLASSES} classes fit uint8 masks, got {scores.shape[1]}")
    if tuple(scores.shape[-2:]) == tuple(size):
        # max(dim).indices, not argmax(dim): the same first-maximum ids, but argmax's reduction over the strided
        # class axis of NCHW logits took 2.5x as long (at 21 x 513 x 513 on AVX-512).
        return scores[0].max(dim=0).indices.to(torch.uint8)
    best = labels = None
    for index in range(scores.shape[1]):
        channel = F.interpolate(scores[:, index : index + 1], size=size, mode="bilinear", align_corners=False)[0, 0]
        if best is None:
            best, labels = channel, torch.zeros(size, dtype=torch.uint8, device=scores.device)
        else:
            better = channel > best  # strict, so ties keep the lower id as torch.argmax does
            torch.maximum(best, channel, out=best)
            labels[better] = index
    return labels
