"""Reports: the confusion-matrix plot is a PNG; the score table lists every class, absent ones too."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from deeplab.evaluation import format_scores, plot_confusion_matrix, segmentation_scores


def test_confusion_matrix_plot_is_a_png(tmp_path: Path) -> None:
    matrix = torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 0]])
    plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "cm.png")
    with Image.open(tmp_path / "cm.png") as png:
        assert png.format == "PNG" and min(png.size) > 100


def test_score_table_lists_classes_and_absent_ones() -> None:
    scores = segmentation_scores(torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 0]]), ["sky", "road", "boat"])
    table = format_scores(scores)
    lines = table.splitlines()
    assert any(line.split() == ["boat", "-"] for line in lines)
    assert any(line.split() == ["sky", f"{5 / 8:.4f}"] for line in lines)
    assert lines[-2].split() == ["mIoU", f"{scores['miou']:.4f}"]
