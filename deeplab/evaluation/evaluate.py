"""Whole-split evaluation: single- or multi-scale (+ flip) predictions accumulated into one confusion matrix."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from datasets.image_files import IGNORE_INDEX

from ..inference.tta import Engine, class_scores
from .confusion import ConfusionMatrix

__all__ = ["evaluate"]


def evaluate(
    engine: Engine,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    ignore_index: int = IGNORE_INDEX,
    min_side: int = 1,
) -> ConfusionMatrix:
    """Run ``engine`` over ``(images, masks)`` batches; it must accept CPU batches (an engine moves them). An image
    (or scale of one) with a side under ``min_side``, the model's smallest input, is a UserError."""
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    with torch.inference_mode():
        for images, masks in batches:
            pred = class_scores(engine, images, scales=scales, flip=flip, min_side=min_side).argmax(dim=1)
            matrix.update(pred.cpu(), masks)
    return matrix
