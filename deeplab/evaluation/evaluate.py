"""Whole-split evaluation: predictions (multi-scale, mirrored or turned ones averaged in) in one confusion matrix."""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterable, Sequence

import torch

from datasets.image_files import IGNORE_INDEX

from ..errors import UserError
from ..inference.tta import Engine, check_engine, class_scores
from .confusion import ConfusionMatrix

__all__ = ["evaluate", "first_ids", "warn_repeated_ids"]


def evaluate(
    engine: Engine,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    any_orientation: bool = False,
    ignore_index: int = IGNORE_INDEX,
    min_side: int = 1,
    image_paths: Sequence[Path] | None = None,
) -> ConfusionMatrix:
    """Run ``engine`` over ``(images, masks)`` batches; it must accept CPU batches (an engine moves them). An image
    (or scale of one) with a side under ``min_side``, the model's smallest input, is a UserError; with the batches'
    ``image_paths`` in order, such an error starts with the file of its batch's first image."""
    check_engine(engine)  # a model still in training mode scored batch statistics and changed its running ones
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    seen = 0
    with torch.inference_mode():
        for images, masks in batches:
            try:
                pred = class_scores(engine, images, scales=scales, flip=flip, any_orientation=any_orientation,
                                    min_side=min_side).argmax(dim=1)
            except UserError as error:
                if image_paths is None:
                    raise
                raise type(error)(f"{image_paths[seen]}: {error}") from None
            matrix.update(pred.cpu(), masks)
            seen += len(images)
    return matrix


def warn_repeated_ids(ids: Sequence[str], *, split: str, scores: str = "scores") -> None:
    """Name, in one warning line, the ids a split lists more than once (lists merged by hand): each copy is scored
    again, so the ``scores`` weigh those images double."""
    repeated = [sample_id for sample_id, count in collections.Counter(ids).items() if count > 1]
    if repeated:
        print(f"warning: split {split} lists {first_ids(repeated)} more than once; each copy counts again in the "
              f"{scores}")


def first_ids(ids: Sequence[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: the first few of a list of image ids, for a warning line."""
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more
