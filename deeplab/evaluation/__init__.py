"""Scoring segmentations: one confusion matrix per split, its scores, whole-split evaluation, reports."""
from __future__ import annotations

from .confusion import ConfusionMatrix, segmentation_scores
from .evaluate import evaluate, warn_repeated_ids
from .report import format_scores, plot_confusion_matrix, report_paths, score_prediction_dir, write_report

__all__ = [
    "ConfusionMatrix",
    "evaluate",
    "format_scores",
    "plot_confusion_matrix",
    "report_paths",
    "score_prediction_dir",
    "segmentation_scores",
    "warn_repeated_ids",
    "write_report",
]
