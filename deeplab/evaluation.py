"""Prediction and whole-split evaluation: single- or multi-scale (+ flip) logits, masks, one confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, model_from_checkpoint
from .errors import UserError
from .inference import create_engine
from .metrics import ConfusionMatrix

__all__ = [
    "Segmenter",
    "evaluate",
    "load_segmenter",
    "predict_probabilities",
    "resolve_device",
    "segment_image",
    "shrink_to",
    "upsample_argmax",
]

Predictor = Callable[[torch.Tensor], torch.Tensor]
#: ``transform(image_uint8_rgb, mask_uint8) -> (normalised float CHW, int64 HW)``, e.g. ``build_eval_transform``.
Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def predict_probabilities(
    predictor: Predictor, images: torch.Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """Class probabilities ``(N, C, H, W)`` averaged over rescaled (and mirrored) copies of ``images``."""
    size = images.shape[-2:]
    total = None
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(
            images, scale_factor=scale, mode="bilinear", align_corners=False
        )
        views = [(scaled, False)] + ([(scaled.flip(-1), True)] if flip else [])
        for view, mirrored in views:
            logits = predictor(view).float()
            logits = logits.flip(-1) if mirrored else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
    return total / (len(scales) * (2 if flip else 1))


def evaluate(
    predictor: Predictor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """Run ``predictor`` over ``(images, masks)`` batches; it must accept CPU batches (an engine moves them)."""
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    with torch.inference_mode():
        for images, masks in batches:
            pred = _class_scores(predictor, images, scales=scales, flip=flip).argmax(dim=1)
            matrix.update(pred.cpu(), masks)
    return matrix


def _class_scores(predictor: Predictor, images: torch.Tensor, *, scales: Sequence[float], flip: bool) -> torch.Tensor:
    """Raw logits for a plain single-scale pass (cheapest), averaged probabilities otherwise; same argmax either way."""
    if list(scales) == [1.0] and not flip:
        return predictor(images)
    return predict_probabilities(predictor, images, scales=scales, flip=flip)


@dataclass(frozen=True)
class Segmenter:
    """A predictor rebuilt from a checkpoint, with what is needed to feed it and name its outputs."""

    predictor: Predictor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a UserError, not a crash later."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def load_segmenter(
    path: str | Path,
    *,
    device: str = "auto",
    engine: str = "auto",
    class_names: Sequence[str] | None = None,
    calibration: Callable[[tuple[float, ...], tuple[float, ...]], Iterable[torch.Tensor]] | None = None,
) -> Segmenter:
    """Rebuild the model of checkpoint ``path`` alone; names from the checkpoint, else ``class_names``, else ids.

    Normalisation comes from the checkpoint's ``mean``/``std`` when saved, else from the model's backbone.
    ``calibration(mean, std)`` yields a few normalised batches; only the ``int8`` engine asks for them.
    """
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    num_classes = model.config["num_classes"]
    names = list(ckpt.get("class_names") or class_names or [str(i) for i in range(num_classes)])
    if len(names) != num_classes:
        raise UserError(f"{path}: model predicts {num_classes} classes but {len(names)} class names were given")
    device = resolve_device(device)
    mean = tuple(float(v) for v in ckpt.get("mean", model.mean))
    std = tuple(float(v) for v in ckpt.get("std", model.std))
    batches = calibration(mean, std) if calibration is not None and engine == "int8" else None
    try:
        predictor = create_engine(model, engine=engine, device=device, calibration=batches)
    except ValueError as exc:  # an engine that does not fit this device or needs more than a checkpoint
        raise UserError(f"--engine {engine}: {exc}") from None
    return Segmenter(predictor=predictor, class_names=names, mean=mean, std=std, device=device)


def segment_image(
    predictor: Predictor,
    image: np.ndarray,
    *,
    transform: Transform,
    max_size: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Class-id mask (uint8 HxW, the image's size) of one uint8 RGB image, and the ``(h, w)`` the model saw.

    An image whose long side exceeds ``max_size`` is shrunk for the model, then its class scores are
    upsampled back one class at a time, so memory stays bounded for photos of any size.
    """
    height, width = image.shape[:2]
    small = shrink_to(image, max_size)
    tensor, _ = transform(small, np.zeros(small.shape[:2], dtype=np.uint8))
    with torch.inference_mode():
        scores = _class_scores(predictor, tensor[None], scales=scales, flip=flip)
        mask = upsample_argmax(scores, (height, width))
    return mask.cpu().numpy(), small.shape[:2]


def shrink_to(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """``image`` scaled down (area interpolation) so its long side is at most ``max_size``; unchanged if smaller."""
    height, width = image.shape[:2]
    if not max_size or max(height, width) <= max_size:
        return image
    scale = max_size / max(height, width)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def upsample_argmax(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 argmax ``(H, W)`` of ``(1, C, h, w)`` scores bilinearly resized to ``size``, with no ``C x H x W`` buffer.

    Masks are 8-bit PNGs with 255 = void, so ids are uint8 (at most 255 classes), which also keeps the
    full-resolution buffers of a large photo small.
    """
    if scores.shape[1] > 255:
        raise ValueError(f"at most 255 classes fit uint8 masks, got {scores.shape[1]}")
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores[0].argmax(dim=0).to(torch.uint8)
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
