"""Segmentation metrics from one confusion matrix accumulated over a whole split (VOC devkit convention)."""
from __future__ import annotations

from typing import Sequence

import torch

from datasets.image_files import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "segmentation_scores"]


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of ground-truth class ``t`` predicted as ``p``; ``ignore_index`` is skipped."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth class-id maps of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        n = self.num_classes
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= n or target.min() < 0 or target.max() >= n):
            raise ValueError(f"class ids must lie in [0, {n}) or equal {self.ignore_index}")
        self.matrix += torch.bincount(n * target + pred, minlength=n * n).reshape(n, n)

    def scores(self, class_names: Sequence[str] | None = None) -> dict:
        """mIoU, pixel accuracy and per-class IoU of everything added so far."""
        return segmentation_scores(self.matrix, class_names)


def segmentation_scores(matrix: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Scores of a confusion matrix; a class absent from both ground truth and prediction has IoU ``None``
    and is left out of the mean, as the VOC devkit does."""
    matrix = matrix.double()
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    true_positive = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp(min=1), torch.zeros_like(union))
    total = matrix.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_acc": float(true_positive.sum() / total) if total > 0 else 0.0,
        "per_class_iou": {name: (float(v) if p else None) for name, v, p in zip(names, iou, present)},
    }
