"""The imbalance study's table: per row, the mean and per-seed rare-class IoU and mIoU, the rare class's
precision and recall where a model predicted it, and the same models scored with mirrored inputs and on fresh
scenes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.demo import ensure_demo_dataset
from deeplab.errors import UserError
from deeplab.benchmark import recipes
from deeplab.benchmark.recipes import (FRESH_SEED, RARE_CLASS, ROWS, ensure_fresh_scenes, model_scores,
                                       recipe_table, run_study)
from tools import eval as eval_tool


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


def test_a_repeated_row_or_seed_is_run_once(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(recipes, "run_one", lambda row, seed, **kwargs: ran.append((row, seed)) or scores(0.1, 0.5))
    results = run_study(["ce", "ce"], [0, 0, 1], out=tmp_path, data_root=str(tmp_path))
    assert ran == [("ce", 0), ("ce", 1)] and list(results) == ran


def test_fresh_scenes_in_the_training_data_folder_are_refused_before_any_write(tmp_path):
    with pytest.raises(UserError, match="--fresh .*training data"):
        run_study(["ce"], [0], out=tmp_path / "runs", data_root=str(tmp_path / "rare"),
                  fresh_root=str(tmp_path / "x" / ".." / "rare"))
    assert not any(tmp_path.iterdir())


def test_flipped_and_fresh_scores_join_the_table_only_when_every_seed_has_them():
    results = {("r", 0): {**scores(0.2, 0.7), "flip": scores(0.3, 0.8), "fresh": scores(0.5, 0.9, 0.6, 0.7)},
               ("r", 1): {**scores(0.4, 0.7), "flip": scores(0.5, 0.6), "fresh": scores(0.6, 0.8, 0.8, 0.5)},
               ("q", 0): {**scores(0.2, 0.7), "flip": scores(0.3, 0.8)}, ("q", 1): scores(0.4, 0.7)}
    table = {row["row"]: row for row in recipe_table(results)}
    assert table["r"]["rare_iou_flip"] == pytest.approx(0.4) and table["r"]["miou_flip"] == pytest.approx(0.7)
    assert table["r"]["rare_iou_per_seed_fresh"] == [0.5, 0.6] and table["r"]["miou_fresh"] == pytest.approx(0.85)
    assert (table["r"]["rare_precision_fresh"], table["r"]["rare_recall_fresh"]) == (0.7, 0.6)
    assert table["r"]["rare_iou"] == pytest.approx(0.3)  # the validation figures stay as they were
    assert "rare_iou_flip" not in table["q"] and "rare_iou_fresh" not in table["q"]
    assert "rare_iou_fresh_flip" not in table["r"]


@pytest.mark.parametrize("view, flag", [({"flip": True}, "--flip"), ({"any_orientation": True}, "--any-orientation")])
def test_view_scores_are_what_eval_py_reports_with_its_flag(view, flag, tmp_path, make_voc_folder, make_checkpoint):
    names = ["background", "a", RARE_CLASS]
    rng = np.random.default_rng(0)
    make_voc_folder(tmp_path, {f"v{i}": rng.integers(0, 3, (40, 52)).astype(np.uint8) for i in range(3)},
                    split="val", classes=names)
    make_checkpoint(tmp_path / "m.pt", names, num_classes=3, varied=True)
    ours = model_scores(tmp_path / "m.pt", split="val", data_root=str(tmp_path), **view)
    reports = {}
    for flag in ([], [flag]):
        out = tmp_path / f"eval{len(flag)}.json"
        assert eval_tool.main(["--checkpoint", str(tmp_path / "m.pt"), "--data-root", str(tmp_path), "--json",
                               str(out), "--workers", "0", "--engine", "torch", *flag]) == 0
        reports[bool(flag)] = json.loads(out.read_text())
    assert ours["per_class_iou"] == pytest.approx(reports[True]["per_class_iou"])
    assert ours["per_class_iou"] != pytest.approx(reports[False]["per_class_iou"])  # the views did change masks


def test_each_view_asked_for_is_scored_on_val_and_on_the_fresh_scenes(tmp_path, monkeypatch):
    """A finished run is read back and scored once per (split, view) asked for, under the names the table reads."""
    folder = recipes.run_folder(tmp_path, "ce", 0)
    folder.mkdir()
    (folder / "last.pt").touch()
    monkeypatch.setattr(recipes, "load_checkpoint", lambda path: {"step": 400, "args": {}, "scores": scores(0.1, 0.5)})
    calls = {}

    def scored(checkpoint, *, split, data_root, **view):
        calls[data_root, tuple(sorted(view))] = split
        return scores(0.2, 0.6)

    monkeypatch.setattr(recipes, "model_scores", scored)
    rare = str(tmp_path / "rare")
    result = recipes.run_one("ce", 0, out=tmp_path, data_root=rare, threads=1, iters=None, flip=True,
                             any_orientation=True, fresh_root="fresh")
    assert sorted(result) == sorted(["flip", "turned", "fresh", "fresh_flip", "fresh_turned", *scores(0.1, 0.5)])
    assert result["miou"] == 0.5  # the run's own validation scores
    assert calls == {(rare, ("flip",)): "val", (rare, ("any_orientation",)): "val", ("fresh", ()): "trainval",
                     ("fresh", ("flip",)): "trainval", ("fresh", ("any_orientation",)): "trainval"}


def test_fresh_scenes_are_the_demo_rare_scenes_of_another_seed(tmp_path):
    fresh = ensure_fresh_scenes(tmp_path / "fresh")
    trained = ensure_demo_dataset(tmp_path / "trained", variant="demo-rare")
    assert FRESH_SEED != 0
    image = "VOCdevkit/VOC2012/JPEGImages/train_0000.jpg"
    assert (fresh / image).read_bytes() != (trained / image).read_bytes()
    written = (fresh / image).stat().st_mtime_ns
    ensure_fresh_scenes(fresh)  # already current: kept as it is
    assert (fresh / image).stat().st_mtime_ns == written
    assert len((fresh / "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt").read_text().split()) == 300


@pytest.mark.slow
def test_a_run_is_also_scored_on_the_fresh_scenes_as_eval_py_scores_them(tmp_path):
    fresh = tmp_path / "fresh"
    results = run_study(["ce"], [0], out=tmp_path / "runs", data_root=str(tmp_path / "rare"), iters=1,
                        fresh_root=str(fresh))
    scores = results["ce", 0]
    checkpoint = next((tmp_path / "runs").glob("*/last.pt"))
    out = tmp_path / "eval.json"
    assert eval_tool.main(["--checkpoint", str(checkpoint), "--data-root", str(fresh), "--split", "trainval",
                           "--json", str(out), "--workers", "0", "--engine", "torch"]) == 0
    assert scores["fresh"]["per_class_iou"] == pytest.approx(json.loads(out.read_text())["per_class_iou"])
    assert scores["fresh"]["per_class_iou"] != pytest.approx(scores["per_class_iou"])  # not the validation split
    assert "flip" not in scores and "fresh_flip" not in scores
