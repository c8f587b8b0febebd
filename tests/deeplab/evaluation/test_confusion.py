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


def test_dice_precision_recall_fw_iou_and_mean_accuracy_match_numpy() -> None:
    rng = np.random.default_rng(1)
    n = 5
    pred = rng.integers(0, n - 1, size=(3, 19, 21))  # class 4 never predicted
    target = rng.integers(0, n, size=(3, 19, 21))
    target[target == 3] = rng.integers(0, 3, size=int((target == 3).sum()))  # class 3 predicted, never present
    target[rng.random(target.shape) < 0.1] = 255
    matrix = ConfusionMatrix(n)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    names = [f"c{i}" for i in range(n)]
    scores = matrix.scores(names)
    valid = target != 255
    p, t = pred[valid], target[valid]
    dice, precision, recall, iou, freq = {}, {}, {}, {}, {}
    for c, name in enumerate(names):
        tp, fp, fn = np.sum((p == c) & (t == c)), np.sum((p == c) & (t != c)), np.sum((p != c) & (t == c))
        dice[name] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        iou[name] = tp / (tp + fp + fn) if tp + fp + fn else None
        precision[name] = tp / (tp + fp) if tp + fp else None
        recall[name] = tp / (tp + fn) if tp + fn else None
        freq[name] = np.mean(t == c)
    assert precision["c4"] is None and recall["c3"] is None and recall["c4"] is not None
    for key, expected in (("per_class_dice", dice), ("per_class_precision", precision),
                          ("per_class_recall", recall)):
        for name, value in expected.items():
            assert scores[key][name] == (pytest.approx(value, abs=1e-12) if value is not None else None)
    assert scores["mean_dice"] == pytest.approx(np.mean([v for v in dice.values() if v is not None]), abs=1e-12)
    assert scores["mean_acc"] == pytest.approx(np.mean([v for v in recall.values() if v is not None]), abs=1e-12)
    assert scores["fw_iou"] == pytest.approx(sum(freq[k] * iou[k] for k in names if iou[k] is not None), abs=1e-12)


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
        matrix.update(torch.zeros(2, 2, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))


def test_numpy_masks_count_and_scores_are_refused_as_ids() -> None:
    """A Prediction's mask and a dataset's are numpy arrays (they raised AttributeError); float scores or
    probabilities were truncated to class 0 without a word."""
    matrix = ConfusionMatrix(3)
    target = np.array([[0, 2], [2, 255]], np.uint8)
    target.setflags(write=False)  # as np.asarray of a PIL image
    matrix.update(np.array([[0, 2], [1, 1]], np.uint8), target)
    assert matrix.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="class ids must be integers, got torch.float32; take the argmax"):
        matrix.update(torch.full((2, 2), 0.7), torch.ones(2, 2, dtype=torch.int64))


def test_names_must_match_classes() -> None:
    with pytest.raises(ValueError, match="class names"):
        segmentation_scores(torch.eye(3, dtype=torch.int64), ["a", "b"])
    with pytest.raises(ValueError, match=r"class names repeat: \['a'\]"):
        segmentation_scores(torch.eye(3, dtype=torch.int64), ["a", "b", "a"])
