"""The imbalance study's table: per row, the mean and per-seed rare-class IoU and mIoU, and the rare class's
precision and recall where a model predicted it."""
from __future__ import annotations

import pytest

from deeplab.benchmark.recipes import RARE_CLASS, ROWS, recipe_table, run_study


def scores(rare_iou: float | None, miou: float, precision: float | None = None, recall: float = 0.0) -> dict:
    return {"miou": miou, "per_class_iou": {"background": 0.9, RARE_CLASS: rare_iou},
            "per_class_precision": {RARE_CLASS: precision}, "per_class_recall": {RARE_CLASS: recall}}


def test_table_averages_each_row_over_its_seeds_in_seed_order():
    results = {
        ("b", 1): scores(0.4, 0.70, precision=0.5, recall=0.6),
        ("a", 0): scores(None, 0.60),  # never predicted: IoU counts as 0, precision is undefined
        ("b", 0): scores(0.2, 0.80, precision=0.3, recall=0.2),
        ("a", 1): scores(0.0, 0.65, recall=0.0),
    }
    table = {row["row"]: row for row in recipe_table(results)}
    assert list(table) == ["b", "a"]
    assert table["b"]["seeds"] == [0, 1]
    assert table["b"]["rare_iou_per_seed"] == [0.2, 0.4] and table["b"]["rare_iou"] == pytest.approx(0.3)
    assert table["b"]["miou"] == pytest.approx(0.75)
    assert (table["b"]["rare_precision"], table["b"]["rare_recall"]) == (0.4, 0.4)
    assert table["a"]["rare_iou"] == 0.0 and table["a"]["rare_precision"] is None


def test_unknown_rows_are_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="unknown rows"):
        run_study(["no such row"], [0], out=tmp_path, data_root=str(tmp_path))
    assert "ce" in ROWS and not any(tmp_path.iterdir())
