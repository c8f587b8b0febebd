"""Confusion-matrix metrics agree with an independent numpy computation and follow the VOC convention."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deeplab.evaluation import ConfusionMatrix, segmentation_scores


def _numpy_scores(preds: list[np.ndarray], targets: list[np.ndarray], n: int) -> tuple[float, float, list]:
    """Per-class IoU by set counting, independent of bincount."""
    pred, target = np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in targets])
    valid = target != 255
    pred, target = pred[valid], target[valid]
    ious = []
    for c in range(n):
        inter = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        ious.append(inter / union if union else None)
    present = [v for v in ious if v is not None]
    return float(np.mean(present)), float(np.mean(pred == target)), ious


def test_matches_numpy_over_several_images() -> None:
    rng = np.random.default_rng(0)
    n = 6
    preds = [rng.integers(0, n - 1, size=(17, 23)) for _ in range(4)]  # class n-1 never predicted
    targets = [rng.integers(0, n - 2, size=(17, 23)) for _ in range(4)]  # nor in GT: absent class
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    matrix = ConfusionMatrix(n)
    for p, t in zip(preds, targets):
        matrix.update(torch.from_numpy(p), torch.from_numpy(t))
    scores = matrix.scores([f"c{i}" for i in range(n)])
    miou, acc, ious = _numpy_scores(preds, targets, n)
    assert scores["miou"] == pytest.approx(miou, abs=1e-12)
    assert scores["pixel_acc"] == pytest.approx(acc, abs=1e-12)
    assert scores["per_class_iou"][f"c{n - 1}"] is None
    for i, v in enumerate(ious):
        assert scores["per_class_iou"][f"c{i}"] == (pytest.approx(v, abs=1e-12) if v is not None else None)


def test_one_matrix_over_split_differs_from_mean_of_images() -> None:
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0]]))
    matrix.update(torch.tensor([[1]]), torch.tensor([[1]]))
    # class 0: 3/4; class 1: 1/2 -> 0.625 accumulated (per-image averaging would differ).
    assert matrix.scores()["miou"] == pytest.approx(0.625)


def test_ignore_label_and_bad_ids() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([2, 1]), torch.tensor([255, 1]))
    assert int(matrix.matrix.sum()) == 1
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        matrix.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        matrix.update(torch.zeros(2, 2), torch.zeros(4))


def test_names_must_match_classes() -> None:
    with pytest.raises(ValueError, match="class names"):
        segmentation_scores(torch.eye(3, dtype=torch.int64), ["a", "b"])
