"""Segmentation metrics from one confusion matrix accumulated over a whole split (VOC devkit convention)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from datasets.image_files import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "segmentation_scores"]


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of ground-truth class ``t`` predicted as ``p``; ``ignore_index`` is skipped."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch of predicted and ground-truth class-id maps of the same shape (tensors, or numpy arrays such
        as a :class:`~deeplab.inference.Prediction`'s mask and a dataset's)."""
        pred, target = _as_tensor(pred), _as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        floating = next((t.dtype for t in (pred, target) if t.is_floating_point()), None)
        if floating is not None:  # scores or probabilities would be truncated to ids without a word
            raise ValueError(f"class ids must be integers, got {floating}; take the argmax of scores first")
        n = self.num_classes
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= n or target.min() < 0 or target.max() >= n):
            raise ValueError(f"class ids must lie in [0, {n}) or equal {self.ignore_index}")
        self.matrix += torch.bincount(n * target + pred, minlength=n * n).reshape(n, n)

    def scores(self, class_names: Sequence[str] | None = None) -> dict:
        """Every score of :func:`segmentation_scores` for everything added so far."""
        return segmentation_scores(self.matrix, class_names)


def _as_tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``values`` as a tensor; a numpy array is copied (a read-only one, as PIL gives, cannot be shared)."""
    return torch.from_numpy(np.array(values)) if isinstance(values, np.ndarray) else values


def segmentation_scores(matrix: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Scores of a confusion matrix: per class IoU, Dice (F1), precision and recall, and their summaries.

    A class absent from both ground truth and prediction has IoU and Dice ``None`` and is left out of the means,
    as the VOC devkit does; precision is ``None`` for a class never predicted, recall for one never present.
    ``mean_acc`` averages recall over the classes present in the ground truth; ``fw_iou`` weighs each class's IoU
    by its share of the ground-truth pixels (Long et al., 2015).
    """
    matrix = matrix.double()
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    if len(set(names)) != n:  # per-class scores are keyed by name: a repeated one would hide a class
        raise ValueError(f"class names repeat: {sorted({name for name in names if names.count(name) > 1})}")
    true_positive, truth, predicted = matrix.diag(), matrix.sum(1), matrix.sum(0)
    union = truth + predicted - true_positive
    present, in_truth, in_prediction = union > 0, truth > 0, predicted > 0
    iou = true_positive / union.clamp(min=1)
    dice = 2 * true_positive / (truth + predicted).clamp(min=1)
    recall = true_positive / truth.clamp(min=1)
    precision = true_positive / predicted.clamp(min=1)
    total = matrix.sum()

    def mean(values: torch.Tensor, where: torch.Tensor) -> float:
        return float(values[where].mean()) if where.any() else 0.0

    def per_class(values: torch.Tensor, where: torch.Tensor) -> dict[str, float | None]:
        return {name: (float(v) if w else None) for name, v, w in zip(names, values, where)}

    return {
        "miou": mean(iou, present),
        "pixel_acc": float(true_positive.sum() / total) if total > 0 else 0.0,
        "mean_acc": mean(recall, in_truth),
        "fw_iou": float((truth * iou).sum() / total) if total > 0 else 0.0,
        "mean_dice": mean(dice, present),
        "per_class_iou": per_class(iou, present),
        "per_class_dice": per_class(dice, present),
        "per_class_precision": per_class(precision, in_prediction),
        "per_class_recall": per_class(recall, in_truth),
    }
