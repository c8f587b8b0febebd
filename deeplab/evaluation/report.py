"""Scores as results: saved prediction masks scored like the VOC devkit, tables, JSON/CSV/PNG reports."""
from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np
import torch

from datasets import VOCSegmentation
from datasets.image_files import IGNORE_INDEX, read_label_png, voc_colour_table

from ..checkpoint import write_atomically
from ..errors import UserError
from ..inference.outputs import prediction_file_names
from ..tool_args import is_stream
from .confusion import ConfusionMatrix

__all__ = ["format_scores", "plot_confusion_matrix", "plot_per_class_scores", "report_paths", "score_prediction_dir",
           "write_report"]

#: Per-class columns of the table and the bar chart: (score key, heading).
PER_CLASS_COLUMNS = (("per_class_iou", "IoU"), ("per_class_dice", "Dice"), ("per_class_precision", "Precision"),
                     ("per_class_recall", "Recall"))
#: Largest side of the confusion-matrix plot, in inches at 100 dpi: at 0.4 inch a class, 254 classes would draw a
#: 10000-pixel square (5 GB of memory, a PNG that image viewers refuse).
MAX_PLOT_INCHES = 40.0
#: Summary lines under the table: (score key, label).
SUMMARY_LINES = (("miou", "mIoU"), ("mean_dice", "mean Dice"), ("fw_iou", "fw IoU"), ("mean_acc", "mean acc"),
                 ("pixel_acc", "pixel acc"))


def score_prediction_dir(dataset: VOCSegmentation, pred_dir: str | Path) -> ConfusionMatrix:
    """One confusion matrix over every ground-truth mask of ``dataset`` and its saved prediction in ``pred_dir``
    (void ignored): the VOC devkit's ``<id>.png`` or what ``predict.py`` writes (``<id>_mask.png``); RGB predictions
    in the data's colours (its labelmap.txt) or the VOC palette's, as other projects colour them."""
    pred_dir = Path(pred_dir)
    if pred_dir.is_file():  # one mask given: the split says which images to score, the folder holds their masks
        raise UserError(f"{pred_dir}: is a file; --pred-dir names the folder of predicted masks")
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: prediction folder not found")
    matrix = ConfusionMatrix(dataset.num_classes)
    prediction_colours = tuple(dict.fromkeys((dataset.colours, voc_colour_table())))
    for i in range(len(dataset)):
        gt_path, pred_path = dataset.mask_path(i), _prediction_path(pred_dir, dataset.image_path(i))
        if pred_path.samefile(gt_path):  # the ground-truth folder passed for the predictions: a perfect score
            raise UserError(f"{pred_path}: is the ground truth itself, not a prediction; --pred-dir names the folder "
                            "of predicted masks (predict.py's --out)")
        target = dataset.read_sized_mask(i)
        pred = read_label_png(pred_path, dataset.num_classes, prediction_colours)
        if pred.shape != target.shape:
            raise UserError(
                f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
                f"{gt_path.name} is {target.shape[1]}x{target.shape[0]} (WxH)"
            )
        unscored = int(((pred == IGNORE_INDEX) & (target != IGNORE_INDEX)).sum())
        if unscored:
            raise UserError(f"{pred_path}: {unscored} labelled pixels are predicted as {IGNORE_INDEX} (void); a "
                            f"prediction gives every pixel a class 0..{dataset.num_classes - 1}")
        matrix.update(pred, target)
    return matrix


def _prediction_path(pred_dir: Path, image_path: Path) -> Path:
    """The one saved prediction of ``image_path`` in ``pred_dir``; UserError when there is none or more than one."""
    names = prediction_file_names(image_path)
    found = [pred_dir / name for name in names if (pred_dir / name).is_file()]
    if not found:
        raise UserError(f"{pred_dir / names[0]}: prediction missing (nor {' or '.join(names[1:])}) for "
                        f"{image_path.name}")
    if len(found) > 1:
        raise UserError(f"{found[0]}: {found[1].name} predicts the same image; keep one of them")
    return found[0]


def format_scores(scores: dict[str, Any]) -> str:
    """A per-class table (IoU, Dice, precision, recall; ``-`` where undefined) and the summary scores."""
    names = list(scores["per_class_iou"])
    width = max([len("class"), len("mean Dice")] + [_columns(name) for name in names])
    columns = [(key, head) for key, head in PER_CLASS_COLUMNS if key in scores]
    lines = [f"{'class':<{width}}" + "".join(f"  {head:>9}" for _, head in columns),
             "-" * width + "  ---------" * len(columns)]
    for name in names:
        cells = [scores[key][name] for key, _ in columns]
        lines.append(name + " " * (width - _columns(name))
                     + "".join(f"  {'-' if v is None else f'{v:.4f}':>9}" for v in cells))
    lines += [f"{label:<{width}}  {scores[key]:>9.4f}" for key, label in SUMMARY_LINES if key in scores]
    return "\n".join(lines)


def _columns(text: str) -> int:
    """Terminal columns ``text`` takes: two for each wide character (Chinese, Japanese, Korean), none for a combining
    accent, one otherwise; ``len`` would leave the score columns misaligned after such class names."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def report_paths(json_path: str | Path) -> dict[str, Path]:
    """Where a report goes: the JSON, and beside it ``<stem>_confusion.csv``, ``<stem>_confusion.png`` and the
    per-class bar chart ``<stem>_per_class.png``; only the JSON when ``json_path`` is a device or a pipe
    (``/dev/stdout``), whose folder is no place for files."""
    json_path = Path(json_path)
    if is_stream(json_path):
        return {"json": json_path}
    stem = json_path.with_suffix("")
    return {
        "json": json_path,
        "csv": stem.with_name(f"{stem.name}_confusion.csv"),
        "png": stem.with_name(f"{stem.name}_confusion.png"),
        "bars": stem.with_name(f"{stem.name}_per_class.png"),
    }


def write_report(
    json_path: str | Path, scores: dict[str, Any], matrix: torch.Tensor, class_names: Sequence[str], **extra: Any
) -> dict[str, Path]:
    """Write scores (plus ``extra`` fields) as JSON, the confusion matrix as CSV and as a PNG plot, and the
    per-class scores as a bar chart, each where :func:`report_paths` puts it; returns the paths written."""
    paths = report_paths(json_path)
    writers = {
        "json": lambda handle: handle.write((json.dumps({**scores, **extra}, indent=2) + "\n").encode("utf-8")),
        "csv": lambda handle: _write_confusion_csv(matrix, class_names, handle),
        "png": lambda handle: plot_confusion_matrix(matrix, class_names, handle),
        "bars": lambda handle: plot_per_class_scores(scores, handle),
    }
    for key, path in paths.items():  # each whole or not at all: a report replaced under --overwrite is never half new
        write_atomically(path, writers[key], what=f"report ({path.name})")
    return paths


def _write_confusion_csv(matrix: torch.Tensor, class_names: Sequence[str], handle: BinaryIO) -> None:
    """The confusion matrix as CSV: a row per ground-truth class, a column per predicted class."""
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow(["ground_truth\\predicted", *class_names])
    for name, row in zip(class_names, matrix.tolist()):
        writer.writerow([name, *row])
    text.flush()
    text.detach()  # the caller closes the file


def plot_confusion_matrix(matrix: torch.Tensor | np.ndarray, class_names: Sequence[str],
                          path: str | Path | BinaryIO) -> None:
    """Save a row-normalised confusion matrix (rows: ground truth, columns: prediction) as a PNG."""
    from matplotlib.figure import Figure  # deferred: only reports need matplotlib

    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    side = min(max(4.0, 0.4 * n + 2.0), MAX_PLOT_INCHES)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of ground-truth pixels")
    ax.set_xticks(range(n), class_names, rotation=90, parse_math=False)  # a name between '$' signs is no formula
    ax.set_yticks(range(n), class_names, parse_math=False)
    ax.tick_params(labelsize=min(10.0, 0.6 * 72 * side / n))  # names shrink to their row once the side is capped
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def plot_per_class_scores(scores: dict[str, Any], path: str | Path | BinaryIO) -> None:
    """Save grouped bars of each class's IoU, Dice, precision and recall as a PNG; an undefined score is marked
    ``-`` as in the table, since a score of 0 draws no bar either."""
    from matplotlib.figure import Figure  # deferred: only reports need matplotlib

    names = list(scores["per_class_iou"])
    columns = [(key, head) for key, head in PER_CLASS_COLUMNS if key in scores]
    n, width = len(names), 0.8 / len(columns)
    fig = Figure(figsize=(max(6.0, 0.6 * n + 2.0), 4.5))
    ax = fig.subplots()
    for k, (key, head) in enumerate(columns):
        values = [scores[key][name] for name in names]
        positions = [i + (k - (len(columns) - 1) / 2) * width for i in range(n)]
        ax.bar(positions, [np.nan if v is None else v for v in values], width=width, label=head)
        for x in (x for x, v in zip(positions, values) if v is None):
            ax.text(x, 0.01, "-", ha="center", va="bottom", color="grey")
    ax.set_xticks(range(n), names, rotation=90 if n > 8 else 0, parse_math=False)
    ax.set_xlim(-0.5, n - 0.5)  # bars of undefined scores, last class's included, claim no room of their own
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("score")
    ax.set_title(f"per-class scores (mIoU {scores['miou']:.3f})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # beside the bars, hiding none
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
