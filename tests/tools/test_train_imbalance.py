"""tools/train.py with the imbalance options: exact resume with each of them, TensorBoard logs, and bad input
(loss names, weight files, shares, absent classes, TensorBoard missing) as one line."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import ensure_demo_dataset
from datasets.voc import split_file
from tools import train as train_tool

FAST = ["--crop-size", "32", "--batch-size", "2", "--workers", "0", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def rare_root(tmp_path_factory) -> Path:
    """The demo-rare data, with a two-image validation split."""
    root = ensure_demo_dataset(tmp_path_factory.mktemp("demo_rare"), variant="demo-rare")
    split_file(root, "val2").write_text("val_0000\nval_0001\n")
    return root


def rare_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "demo-rare", "--data-root", str(root), "--val-split", "val2", "--out", str(out), *FAST,
            *extra]


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


class SimulatedCrash(Exception):
    pass


def weights_file(tmp_path: Path) -> str:
    path = tmp_path / "weights.txt"
    path.write_text("0.5\n1\n1\n1\n1\n8\n")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    lambda tmp: ["--recipe", "imbalanced", "--class-weights", "auto", "--any-orientation"],  # + the recipe's settings
    lambda tmp: ["--loss", "focal+lovasz", "--class-weights", weights_file(tmp), "--balanced-crops", "1.0",
                 "--copy-paste", "0.5"],
    lambda tmp: ["--loss", "ce+tversky+jaccard", "--ohem", "0.5", "--color-jitter", "0.5", "--tensorboard",
                 "--min-scale", "0.75", "--max-scale", "1.25"],
], ids=["recipe-any-orientation", "focal+lovasz-file-crops-paste", "tversky-ohem-jitter-tensorboard-scale"])
def test_resume_with_each_option_equals_an_uninterrupted_run(rare_root, tmp_path, failing_train_step, options):
    common = ("--iters", "6", "--val-every", "3", "--lr", "0.02", "--warmup-iters", "2", *options(tmp_path))
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert train_tool.main(rare_args(rare_root, full, *common)) == 0

    with failing_train_step(5, SimulatedCrash), pytest.raises(SimulatedCrash):
        train_tool.main(rare_args(rare_root, broken, *common))
    resume = ["--resume", str(broken / "last.pt"), "--workers", "0", "--no-progress"]
    assert train_tool.main(resume + (["--tensorboard"] if "--tensorboard" in common else [])) == 0

    assert read_log(broken) == read_log(full)
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (full, broken))
    assert a["step"] == b["step"] == 6
    assert {k: v for k, v in a["args"].items() if k != "out"} == {k: v for k, v in b["args"].items() if k != "out"}
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    option_names = {"--loss": "loss", "--ohem": "ohem", "--balanced-crops": "balanced_crops", "--recipe": "recipe",
                    "--color-jitter": "color_jitter", "--copy-paste": "copy_paste",
                    "--min-scale": "min_scale", "--max-scale": "max_scale"}
    for flag, name in option_names.items():
        if flag in common:
            assert str(a["args"][name]) == common[common.index(flag) + 1]
    assert a["args"]["any_orientation"] is ("--any-orientation" in common)


def test_resume_keeps_the_stored_weights_of_an_edited_weights_file(rare_root, tmp_path, failing_train_step,
                                                                    capsys):
    weights = weights_file(tmp_path)
    common = ("--iters", "4", "--val-every", "2", "--lr", "0.02", "--warmup-iters", "1", "--class-weights", weights)
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert train_tool.main(rare_args(rare_root, full, *common)) == 0
    with failing_train_step(3, SimulatedCrash), pytest.raises(SimulatedCrash):
        train_tool.main(rare_args(rare_root, broken, *common))
    Path(weights).write_text("1\n1\n1\n1\n1\n1\n")  # edited between the stop and the resume
    capsys.readouterr()
    assert train_tool.main(["--resume", str(broken / "last.pt"), "--workers", "0", "--no-progress"]) == 0

    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: --class-weights {weights} now gives other weights than this run started with; "
                        "the resumed run keeps those stored in its checkpoint"]
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (full, broken))
    assert a["args"]["class_weight_values"] == b["args"]["class_weight_values"] == [0.5, 1, 1, 1, 1, 8]
    assert read_log(broken) == read_log(full)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slow
def test_tensorboard_logs_scalars_per_class_scores_and_overlays(rare_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert train_tool.main(rare_args(rare_root, out, "--iters", "2", "--val-every", "2", "--tensorboard")) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "val/miou", "val/fw_iou", "val/mean_acc"} <= scalars
    assert {"val_iou/background", "val_dice/background", "val_recall/background"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    overlays = [tag for tag in events.Tags()["images"] if tag.startswith("val_overlay/")]
    assert len(overlays) == 2  # the two validation images, ground truth beside prediction
    assert (out / "metrics.jsonl").is_file() and (out / "curves.png").is_file()
    record = read_log(out)[-1]
    assert set(record["per_class_iou"]) == {"background", "circle", "square", "triangle", "cross", "diamond"}


def test_tensorboard_missing_is_one_line_saying_how_to_install(rare_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    assert train_tool.main(rare_args(rare_root, tmp_path / "run", "--iters", "1", "--tensorboard")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tensorboard" in err and "pip install" in err


@pytest.mark.parametrize("extra, message", [
    (["--loss", "crossentropy"], "--loss crossentropy: unknown term 'crossentropy'; choose one of ce, focal, ce+dice"),
    (["--ohem", "1.5"], "--ohem 1.5: the share of hardest pixels kept must lie in (0, 1]"),
    (["--balanced-crops", "-0.1"], "--balanced-crops -0.1: the share of class-focused crops must lie in [0, 1]"),
    (["--color-jitter", "2"], "--color-jitter 2.0: the share of colour-jittered samples must lie in [0, 1]"),
    (["--copy-paste", "1.5"], "--copy-paste 1.5: the share of samples given a pasted object must lie in [0, 1]"),
    (["--class-weights", "WEIGHTS:1\n2\n"], "weights.txt: 2 weights, but the data has 6 classes"),
    (["--class-weights", "WEIGHTS:1\n1\n-1\n1\n1\n1\n"], "weights.txt: line 3: '-1' is not a non-negative number"),
    (["--class-weights", "WEIGHTS:1\n1\nmany\n1\n1\n1\n"], "weights.txt: line 3: 'many' is not a non-negative"),
    (["--class-weights", "missing.txt"], f"{Path.cwd() / 'missing.txt'}: cannot read (No such file"),
])
def test_bad_imbalance_input_is_one_line(rare_root, tmp_path, capsys, monkeypatch, extra, message):
    if extra[-1].startswith("WEIGHTS:"):
        (tmp_path / "weights.txt").write_text(extra[-1].removeprefix("WEIGHTS:"))
        extra = [*extra[:-1], str(tmp_path / "weights.txt")]
    if extra[0] == "--class-weights":  # a weights file is read before the split's masks are counted (minutes on VOC)
        monkeypatch.setattr(importlib.import_module("deeplab.engine.fit"), "class_pixel_counts",
                            lambda *a, **k: pytest.fail("counted before the weights file was read"))
    assert train_tool.main(rare_args(rare_root, tmp_path / "run", "--iters", "1", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_auto_weights_warn_once_about_a_class_the_split_never_shows(tmp_path, make_voc_folder, capsys):
    masks = {f"m{i}": np.zeros((40, 40), np.uint8) for i in range(2)}
    masks["m0"][5:25, 5:25] = 1
    make_voc_folder(tmp_path, masks, split="val")
    make_voc_folder(tmp_path, masks, split="train", classes=["bg", "thing", "ghost"])
    args = ["--dataset", "voc", "--data-root", str(tmp_path), "--pretrained-backbone", "none", "--iters", "1",
            "--class-weights", "auto", "--loss", "ce+dice", "--out", str(tmp_path / "run"), *FAST]
    assert train_tool.main(args) == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if "ghost" in line] == [
        "warning: class ghost never occurs in split train; its weight is set to 10"]
    weights_line = next(line for line in captured.out.splitlines() if line.startswith("class weights (auto)"))
    assert "ghost 10" in weights_line and "bg " in weights_line


@pytest.mark.parametrize("loss", ["ce", "focal+dice"])
def test_weights_of_zero_for_every_class_the_split_holds_are_one_line(loss, tmp_path, make_voc_folder, capsys):
    """Only the class no training image shows weighs anything: the weighted loss would teach nothing."""
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1
    make_voc_folder(tmp_path, {"m": mask}, split="val")
    make_voc_folder(tmp_path, {"m": mask}, split="train", classes=["bg", "thing", "ghost"])
    (tmp_path / "weights.txt").write_text("0\n0\n1\n")
    args = ["--dataset", "voc", "--data-root", str(tmp_path), "--pretrained-backbone", "none", "--iters", "1",
            "--class-weights", str(tmp_path / "weights.txt"), "--loss", loss, "--out", str(tmp_path / "run"), *FAST]
    assert train_tool.main(args) == 2
    assert capsys.readouterr().err == (f"error: --class-weights {tmp_path / 'weights.txt'}: every class split train "
                                       "holds (bg, thing) weighs 0, so the weighted loss learns nothing; give at "
                                       "least one of them a weight above 0\n")
    assert not (tmp_path / "run").exists()
