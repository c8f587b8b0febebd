"""tools/benchmark_recipes.py: the flags reach the study, and the printed table shows the extra scores asked for."""
from __future__ import annotations

import json

import pytest

from deeplab.benchmark.recipes import RARE_CLASS
from tools import benchmark_recipes


def scores(rare_iou: float, miou: float) -> dict:
    return {"miou": miou, "per_class_iou": {RARE_CLASS: rare_iou}, "per_class_precision": {RARE_CLASS: 0.5},
            "per_class_recall": {RARE_CLASS: 0.5}}


def test_fresh_scores_get_their_column_and_reach_the_json(tmp_path, monkeypatch, capsys):
    calls = {}

    def fake_study(rows, seeds, **kwargs):
        calls.update(kwargs, rows=rows, seeds=seeds)
        return {("ce", seed): {**scores(0.1 * seed, 0.7), "fresh": scores(0.2 + 0.1 * seed, 0.8)} for seed in seeds}

    monkeypatch.setattr(benchmark_recipes, "run_study", fake_study)
    out = tmp_path / "table.json"
    assert benchmark_recipes.main(["--out", str(tmp_path / "runs"), "--rows", "ce", "--fresh", str(tmp_path / "f"),
                                   "--json", str(out)]) == 0
    assert calls["fresh_root"] == str(tmp_path / "f") and calls["seeds"] == [0, 1]
    assert calls["flip"] is False and calls["any_orientation"] is False
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| setting"))
    assert "fresh scenes" in header and "--flip" not in header
    assert "| 0.25 / 0.8 |" in printed  # the fresh scores' mean rare IoU / mIoU
    (row,) = json.loads(out.read_text())
    assert row["rare_iou_per_seed_fresh"] == [0.2, 0.3] and row["rare_iou"] == 0.05


def no_study(rows, seeds, **kwargs):
    raise AssertionError("the study started")


@pytest.mark.parametrize("flags, message", [
    (["--threads", "0"], "--threads: must be at least 1, got 0"),
    (["--seeds", "0", "-5"], "--seeds: must be 0 or more, got -5"),
    (["--jobs", "0"], "--jobs: must be at least 1, got 0"),
    (["--iters", "0"], "--iters: must be at least 1, got 0"),
])
def test_bad_flags_are_one_line_before_any_run(flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark_recipes, "run_study", no_study)
    assert benchmark_recipes.main(["--out", str(tmp_path / "runs"), "--rows", "ce", *flags]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_json_must_be_a_new_file_unless_overwrite(tmp_path, monkeypatch, capsys):
    kept = tmp_path / "kept.json"
    kept.write_text("mine")
    monkeypatch.setattr(benchmark_recipes, "run_study", no_study)
    for target in (kept, tmp_path):
        assert benchmark_recipes.main(["--out", str(tmp_path / "runs"), "--rows", "ce", "--json", str(target)]) == 2
        assert "--json" in capsys.readouterr().err
    assert kept.read_text() == "mine"
    monkeypatch.setattr(benchmark_recipes, "run_study", lambda rows, seeds, **kwargs: {
        ("ce", seed): scores(0.5, 0.7) for seed in seeds})
    assert benchmark_recipes.main(["--out", str(tmp_path / "runs"), "--rows", "ce", "--json", str(kept),
                                   "--overwrite"]) == 0
    assert json.loads(kept.read_text())[0]["rare_iou"] == 0.5
