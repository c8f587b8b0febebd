"""Reports: the confusion-matrix plot and the per-class bar chart are PNGs; the score table lists every class,
absent ones too, with IoU, Dice, precision and recall, then the summary scores."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from deeplab.errors import UserError
from deeplab.evaluation import format_scores, plot_confusion_matrix, report, segmentation_scores, write_report


def test_confusion_matrix_plot_is_a_png(tmp_path: Path) -> None:
    matrix = torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 0]])
    plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "cm.png")
    with Image.open(tmp_path / "cm.png") as png:
        assert png.format == "PNG" and min(png.size) > 100


def test_confusion_matrix_plot_of_many_classes_stays_a_viewable_size(tmp_path: Path) -> None:
    n = 254  # the most classes a mask holds
    plot_confusion_matrix(torch.eye(n, dtype=torch.int64), [f"class {i}" for i in range(n)], tmp_path / "cm.png")
    with Image.open(tmp_path / "cm.png") as png:
        assert max(png.size) <= 4100


def test_score_table_lists_classes_and_absent_ones() -> None:
    scores = segmentation_scores(torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 0]]), ["sky", "road", "boat"])
    table = format_scores(scores)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "Dice", "Precision", "Recall"]
    assert any(line.split() == ["boat", "-", "-", "-", "-"] for line in lines)
    # sky: 5 true positives, 1 missed, 2 false alarms.
    assert any(line.split() == ["sky", f"{5 / 8:.4f}", f"{10 / 13:.4f}", f"{5 / 7:.4f}", f"{5 / 6:.4f}"]
               for line in lines)
    assert lines[-5].split() == ["mIoU", f"{scores['miou']:.4f}"]
    assert lines[-1].split() == ["pixel", "acc", f"{12 / 15:.4f}"]


def test_per_class_chart_marks_undefined_scores_apart_from_zero(tmp_path: Path, monkeypatch) -> None:
    """Neither a score of 0 nor an undefined one draws a bar: the undefined ones carry the table's '-'."""
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    # sky found; road never predicted (IoU 0, precision undefined); boat in neither (all four undefined).
    scores = segmentation_scores(torch.tensor([[5, 0, 0], [2, 0, 0], [0, 0, 0]]), ["sky", "road", "boat"])
    report.plot_per_class_scores(scores, tmp_path / "bars.png")
    ax = drawn[0].axes[0]
    marks = [(round(text.get_position()[0], 3), text.get_text()) for text in ax.texts]
    width = 0.8 / 4  # IoU, Dice, precision, recall side by side around each class's tick
    expected = [(round(2 + (k - 1.5) * width, 3), "-") for k in range(4)] + [(round(1 + 0.5 * width, 3), "-")]
    assert sorted(marks) == sorted(expected)
    low, high = ax.get_xlim()  # the last class's marks inside the plot too, though it has no bar
    assert all(low < x < high for x, _ in marks)


def test_score_table_columns_line_up_after_wide_class_names() -> None:
    names = ["背景", "猫", "cafe\u0301", "sky"]  # Chinese (two columns each), a combining accent (none)
    table = format_scores(segmentation_scores(torch.eye(4, dtype=torch.int64), names))
    cells = "".join(f"  {1.0:>9.4f}" for _ in range(4))
    # padded to "mean Dice", the widest label: 9 terminal columns
    assert [line for line in table.splitlines() if line.endswith(cells)][:4] == [
        "背景" + " " * 5 + cells, "猫" + " " * 7 + cells, "cafe\u0301" + " " * 5 + cells, "sky" + " " * 6 + cells]


def test_report_writes_json_csv_and_both_pictures(tmp_path: Path) -> None:
    matrix = torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 0]])
    scores = segmentation_scores(matrix, ["sky", "road", "boat"])
    paths = write_report(tmp_path / "r.json", scores, matrix, ["sky", "road", "boat"])
    assert paths["bars"] == tmp_path / "r_per_class.png"
    for key in ("png", "bars"):
        with Image.open(paths[key]) as png:
            assert png.format == "PNG" and min(png.size) > 100


def test_class_names_with_dollar_signs_are_drawn_as_written(tmp_path: Path) -> None:
    """Matplotlib reads text between '$' signs as a formula, and one it cannot parse ended the report midway."""
    matrix = torch.tensor([[5, 1], [2, 7]])
    names = ["$5 note", "square $\\alpha_$"]
    paths = write_report(tmp_path / "r.json", segmentation_scores(matrix, names), matrix, names)
    for key in ("png", "bars"):
        with Image.open(paths[key]) as png:
            assert png.format == "PNG"


def test_a_report_that_fails_midway_leaves_the_previous_files_whole(tmp_path: Path, monkeypatch) -> None:
    matrix = torch.tensor([[5, 1], [2, 7]])
    names = ["sky", "road"]
    paths = write_report(tmp_path / "r.json", segmentation_scores(matrix, names), matrix, names, split="val")
    before = {key: path.read_bytes() for key, path in paths.items()}

    def full_disk(scores, file):  # the bar chart is written last: the files before it are already replaced
        with open(file, "wb") if isinstance(file, Path) else contextlib.nullcontext(file) as handle:
            handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "plot_per_class_scores", full_disk)
    other = torch.tensor([[1, 5], [7, 2]])
    with pytest.raises(UserError, match=r"r_per_class.png: cannot write report .*No space left on device"):
        write_report(tmp_path / "r.json", segmentation_scores(other, names), other, names, split="test")
    assert paths["bars"].read_bytes() == before["bars"]
    assert json.loads(paths["json"].read_text())["split"] == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(path.name for path in paths.values())


REPORT_TO_STDOUT = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from deeplab.evaluation import segmentation_scores, write_report
matrix = torch.tensor([[5, 1], [2, 7]])
print("table")
write_report("/dev/stdout", segmentation_scores(matrix, ["sky", "road"]), matrix, ["sky", "road"], split="val")
print("wrote /dev/stdout")
"""


@pytest.mark.parametrize("redirect", ["file", "pipe"])
def test_report_to_dev_stdout_follows_what_was_printed(redirect: str, tmp_path: Path, repo_root: Path) -> None:
    """``eval.py --json /dev/stdout > scores.txt`` and ``... | jq``: the JSON lands between the lines printed around
    it, whole, with nothing beside it in /dev and nothing of the file truncated or overwritten."""
    command = [sys.executable, "-c", REPORT_TO_STDOUT, str(repo_root)]
    if redirect == "file":
        with open(tmp_path / "scores.txt", "wb") as out:
            subprocess.run(command, stdout=out, check=True, timeout=120)
        text = (tmp_path / "scores.txt").read_text()
    else:
        text = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    first, *body, last = text.splitlines()
    assert (first, last) == ("table", "wrote /dev/stdout")
    assert json.loads("\n".join(body))["split"] == "val"


def test_report_into_a_pipe_is_the_json_alone(tmp_path: Path) -> None:
    """``--json /dev/stdout`` or a named pipe: the pipe's folder (/dev) gets no confusion files beside it."""
    pipe = tmp_path / "scores.json"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    matrix = torch.tensor([[5, 1], [2, 7]])
    paths = write_report(pipe, segmentation_scores(matrix, ["sky", "road"]), matrix, ["sky", "road"], split="val")
    reader.join(timeout=30)
    assert paths == {"json": pipe} and json.loads(received[0])["split"] == "val"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]
