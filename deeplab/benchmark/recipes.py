"""Imbalance section: every loss and sampling option, and their combinations, trained on ``demo-rare`` with the
same budget and seeds; the table of rare-class IoU and mIoU from which the ``imbalanced`` recipe was chosen.

Each (row, seed) is one :func:`~deeplab.engine.fit` run in its own folder; a finished run is read back from its
``last.pt`` and an interrupted one resumed, so the study can be stopped and continued at will. With ``flip``, each
final model is also scored as ``eval.py --flip`` scores it (every image also seen mirrored, the two averaged), with
``any_orientation`` as ``eval.py --any-orientation`` does (all eight mirrors and quarter turns averaged).

The recipe is chosen on the validation split, whose 100 images hold only about 15 rare objects. With ``fresh_root``
every final model is also scored on fresh scenes: the same generator with another seed, all 300 images, about 80
rare objects that no run trained on and no choice was made on, so that score is neither tuned nor as noisy.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from datasets import VOCSegmentation, build_eval_transform
from datasets.demo import ensure_demo_dataset

from ..checkpoint import load_checkpoint
from ..engine import fit, resolve_config
from ..engine.data import build_val_loader
from ..errors import UserError
from ..evaluation import evaluate
from ..inference import Predictor

__all__ = ["FRESH_SEED", "RARE_CLASS", "ROWS", "ensure_fresh_scenes", "model_scores", "recipe_table", "run_study"]

RARE_CLASS = "diamond"
FRESH_SEED = 1  # the demo generator's seed for the fresh scenes; training and validation use seed 0
_FRESH_SPLIT = "trainval"  # every fresh scene
#: What a run's result may carry beside its validation scores.
_EXTRA_SCORES = ("flip", "turned", "fresh", "fresh_flip", "fresh_turned")
_BEST_LOSS_ROW = "ce+3*dice, crops + ohem 0.1"  # the best loss and sampling found; later rows add to it
_BEST_LOSS = {"loss": "ce+3*dice", "balanced_crops": 0.5, "ohem": 0.1}
_SCALE = {"min_scale": 0.75, "max_scale": 1.25}
#: Row name -> settings on top of the ``demo-rare`` preset (mobilenetv2 OS16 from scratch, 400 steps, batch 8,
#: crop 128, lr 0.01 unless the row sets ``lr``).
ROWS: dict[str, dict[str, Any]] = {
    "ce": {},
    "ce+dice": {"loss": "ce+dice"},
    "ce+lovasz": {"loss": "ce+lovasz"},
    "ce+tversky": {"loss": "ce+tversky"},
    "focal": {"loss": "focal"},
    "ce, auto weights": {"class_weights": "auto"},
    "ce, ohem 0.25": {"ohem": 0.25},
    "ce, balanced crops 0.5": {"balanced_crops": 0.5},
    "ce, crops + ohem": {"balanced_crops": 0.5, "ohem": 0.25},
    "ce, crops + weights": {"balanced_crops": 0.5, "class_weights": "auto"},
    "ce, crops + weights + ohem": {"balanced_crops": 0.5, "class_weights": "auto", "ohem": 0.25},
    "ce+dice, crops + ohem": {"loss": "ce+dice", "balanced_crops": 0.5, "ohem": 0.25},
    "ce+lovasz, crops + ohem": {"loss": "ce+lovasz", "balanced_crops": 0.5, "ohem": 0.25},
    "ce+dice, crops + weights + ohem": {"loss": "ce+dice", "balanced_crops": 0.5, "class_weights": "auto",
                                        "ohem": 0.25},
    # Other shares of class-balanced crops, harder pixel mining, heavier Dice: the search for the recipe.
    "ce+dice, crops 0.75 + ohem": {"loss": "ce+dice", "balanced_crops": 0.75, "ohem": 0.25},
    "ce+dice, crops 1.0 + ohem": {"loss": "ce+dice", "balanced_crops": 1.0, "ohem": 0.25},
    "ce+dice, crops + ohem 0.1": {"loss": "ce+dice", "balanced_crops": 0.5, "ohem": 0.1},
    "ce+3*dice, crops + ohem": {"loss": "ce+3*dice", "balanced_crops": 0.5, "ohem": 0.25},
    "ce+6*dice, crops + ohem": {"loss": "ce+6*dice", "balanced_crops": 0.5, "ohem": 0.25},
    "ce+3*dice, crops 0.25 + ohem 0.1": {"loss": "ce+3*dice", "balanced_crops": 0.25, "ohem": 0.1},
    "ce+3*dice, crops + ohem 0.05": {"loss": "ce+3*dice", "balanced_crops": 0.5, "ohem": 0.05},
    "focal+3*dice, crops": {"loss": "focal+3*dice", "balanced_crops": 0.5},
    _BEST_LOSS_ROW: _BEST_LOSS,
    # On top of that: colour jitter (the diamond's colour stops naming it, so look-alike colours stop fooling).
    f"{_BEST_LOSS_ROW}, jitter 0.2": {**_BEST_LOSS, "color_jitter": 0.2},
    f"{_BEST_LOSS_ROW}, jitter 0.5": {**_BEST_LOSS, "color_jitter": 0.5},
    f"{_BEST_LOSS_ROW}, jitter 0.8": {**_BEST_LOSS, "color_jitter": 0.8},
    # Copy-paste: the rare objects shown in every kind of training scene, beside that scene's look-alikes.
    f"{_BEST_LOSS_ROW}, paste 0.5": {**_BEST_LOSS, "copy_paste": 0.5},
    "ce+3*dice, paste 0.5 + ohem 0.1, scale 0.75-1.25": {"loss": "ce+3*dice", "ohem": 0.1, "copy_paste": 0.5,
                                                         **_SCALE},
    # Narrower random rescaling: at 0.5-2x a small look-alike can take the rare object's size, and the rare object
    # shrinks below what stride-4 features resolve.
    **{f"{_BEST_LOSS_ROW}, scale {low:g}-{high:g}": {**_BEST_LOSS, "min_scale": low, "max_scale": high}
       for low, high in ((0.75, 1.25), (0.6, 1.4), (0.75, 1.5), (0.75, 2.0), (1.0, 1.5), (0.9, 1.1), (1.0, 1.0))},
    "ce, scale 0.75-1.25": _SCALE,
    "ce+3*dice, crops + ohem 0.25, scale 0.75-1.25": {**_BEST_LOSS, "ohem": 0.25, **_SCALE},
    "ce+3*dice, crops 0.25 + ohem 0.1, scale 0.75-1.25": {**_BEST_LOSS, "balanced_crops": 0.25, **_SCALE},
    "ce+3*tversky, crops + ohem 0.1, scale 0.75-1.25": {**_BEST_LOSS, "loss": "ce+3*tversky", **_SCALE},
    "ce+3*dice+lovasz, crops + ohem 0.1, scale 0.75-1.25": {**_BEST_LOSS, "loss": "ce+3*dice+lovasz", **_SCALE},
    "ce+6*dice, crops + ohem 0.1, scale 0.75-1.25": {**_BEST_LOSS, "loss": "ce+6*dice", **_SCALE},
    "ce+3*dice, crops 0.75 + ohem 0.1, scale 0.75-1.25": {**_BEST_LOSS, "balanced_crops": 0.75, **_SCALE},
    "ce+3*dice, crops, scale 0.75-1.25": {"loss": "ce+3*dice", "balanced_crops": 0.5, **_SCALE},
    # The recipe's neighbours: a little more or less Dice, a little more or less mining.
    **{f"ce+{k}*dice, crops + ohem 0.1, scale 0.75-1.25": {**_BEST_LOSS, "loss": f"ce+{k}*dice", **_SCALE}
       for k in (2, 4)},
    **{f"ce+3*dice, crops + ohem {share:g}, scale 0.75-1.25": {**_BEST_LOSS, "ohem": share, **_SCALE}
       for share in (0.075, 0.15)},
    # The peak learning rate, for the recipe and for plain cross-entropy: the same steps, batch and crop, the same
    # warm-up and poly decay.
    **{f"ce+3*dice, crops + ohem 0.1, scale 0.75-1.25, lr {lr:g}": {**_BEST_LOSS, **_SCALE, "lr": lr}
       for lr in (0.005, 0.02, 0.04, 0.08)},
    "ce, lr 0.04": {"lr": 0.04},
    # The recipe's neighbours again at lr 0.04: more mining, more Dice, Tversky, a wider scale range.
    "ce+3*dice, crops + ohem 0.15, scale 0.75-1.25, lr 0.04": {**_BEST_LOSS, **_SCALE, "ohem": 0.15, "lr": 0.04},
    **{f"{loss}, crops + ohem 0.1, scale 0.75-1.25, lr 0.04": {**_BEST_LOSS, **_SCALE, "loss": loss, "lr": 0.04}
       for loss in ("ce+4*dice", "ce+3*tversky")},
    "ce+3*dice, crops + ohem 0.1, scale 0.6-1.4, lr 0.04": {**_BEST_LOSS, "min_scale": 0.6, "max_scale": 1.4,
                                                            "lr": 0.04},
    # Every orientation: the scenes have no up or down, so each crop may be shown in any of its eight mirrors and
    # quarter turns (eight views of each of the 51 images that hold a diamond, against two).
    **{f"ce+3*dice, crops + ohem 0.1, scale 0.75-1.25, lr {lr:g}, any orientation": {**_BEST_LOSS, **_SCALE, "lr": lr,
                                                                                       "any_orientation": True}
       for lr in (0.01, 0.04)},
    "ce, lr 0.04, any orientation": {"lr": 0.04, "any_orientation": True},
}


def run_folder(out: Path, row: str, seed: int) -> Path:
    """Where the run of ``row`` with ``seed`` lives: a file-system-safe name."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in row).strip("_")
    return out / f"{slug}_s{seed}"


def run_one(row: str, seed: int, *, out: Path, data_root: str, threads: int, iters: int | None,
            flip: bool = False, any_orientation: bool = False, fresh_root: str | None = None) -> dict[str, Any]:
    """Train (or finish, or just read) one run; returns its final validation scores, with ``flip`` also those
    with mirrored inputs averaged in (under ``"flip"``), with ``any_orientation`` those of all eight mirrors and
    quarter turns averaged (``"turned"``), with ``fresh_root`` also those on every fresh scene there (under
    ``"fresh"``, and ``"fresh_flip"`` / ``"fresh_turned"``)."""
    torch.set_num_threads(threads)
    folder = run_folder(out, row, seed)
    flags = {"dataset": "demo-rare", "data_root": data_root, "seed": seed, "out": str(folder), "workers": 0,
             "iters": iters, **ROWS[row]}
    last = folder / "last.pt"
    resumed = load_checkpoint(last) if last.is_file() else None
    config = resolve_config(flags, resumed.get("args", {}) if resumed else None)
    if resumed is None or resumed["step"] < config.iters:
        fit(config, resume=resumed, resume_path=last if resumed else None, progress=False)
        resumed = load_checkpoint(last)
    result = dict(resumed["scores"])  # the plain validation scores: those the run computed
    views = {"": {}, **({"flip": {"flip": True}} if flip else {}),
             **({"turned": {"any_orientation": True}} if any_orientation else {})}
    for name, view in views.items():
        if name:
            result[name] = model_scores(last, split=config.val_split, data_root=config.data_root, **view)
        if fresh_root is not None:
            result["_".join(filter(None, ("fresh", name)))] = model_scores(last, split=_FRESH_SPLIT,
                                                                           data_root=fresh_root, **view)
    return result


def model_scores(checkpoint: Path, *, split: str, data_root: str, flip: bool = False,
                 any_orientation: bool = False) -> dict[str, Any]:
    """Scores of ``checkpoint`` on ``split`` of ``data_root`` in exact fp32, with ``flip`` every image also
    predicted mirrored and the two averaged (as ``eval.py --flip``), with ``any_orientation`` the eight mirrors
    and quarter turns averaged (as ``eval.py --any-orientation``)."""
    predictor = Predictor.from_checkpoint(checkpoint, engine="torch", device="cpu")
    dataset = VOCSegmentation(data_root, split=split, class_names=predictor.class_names,
                              transform=build_eval_transform(mean=predictor.mean, std=predictor.std))
    matrix = evaluate(predictor.engine, build_val_loader(dataset), num_classes=len(predictor.class_names), flip=flip,
                      any_orientation=any_orientation)
    return matrix.scores(predictor.class_names)


def ensure_fresh_scenes(root: str | Path) -> Path:
    """The fresh scenes under ``root``: ``demo-rare`` drawn with :data:`FRESH_SEED`, written unless current."""
    return ensure_demo_dataset(root, seed=FRESH_SEED, variant="demo-rare")


def run_study(rows: Sequence[str], seeds: Sequence[int], *, out: str | Path, data_root: str, threads: int = 1,
              jobs: int = 1, iters: int | None = None, flip: bool = False, any_orientation: bool = False,
              fresh_root: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Every distinct (row, seed), ``jobs`` at a time in separate processes; returns each run's final scores (see
    :func:`run_one`; the fresh scenes are written once, before any run)."""
    out = Path(out)
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if fresh_root is not None:
        if Path(fresh_root).resolve() == Path(data_root).resolve():
            raise UserError(f"--fresh {fresh_root}: that is the training data's folder; the fresh scenes need one "
                            f"of their own")
        ensure_fresh_scenes(fresh_root)
    tasks = list(dict.fromkeys((row, seed) for row in rows for seed in seeds))  # a repeat would train twice at once
    kwargs = {"out": out, "data_root": data_root, "threads": threads, "iters": iters, "flip": flip,
              "any_orientation": any_orientation, "fresh_root": fresh_root}
    if jobs <= 1:
        return {task: run_one(*task, **kwargs) for task in tasks}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {task: pool.submit(run_one, *task, **kwargs) for task in tasks}
        return {task: future.result() for task, future in futures.items()}


def recipe_table(results: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study row: rare-class IoU and mIoU, mean over seeds and each seed's value, and the rare class's
    mean precision and recall (None where no seed's model predicted it, so precision is undefined). Where every
    seed's run also carries mirrored (``flip``), turned (``turned``), fresh-scene (``fresh``) or both (``fresh_flip``,
    ``fresh_turned``) scores, their
    means and per-seed values too, under the same names with that suffix (``rare_iou_flip``, ``miou_fresh``...)."""
    table = []
    for row in dict.fromkeys(row for row, _ in results):
        seeds = sorted(seed for name, seed in results if name == row)
        runs = [results[row, seed] for seed in seeds]
        entry = {"row": row, "seeds": seeds, **_summary(runs, "")}
        for key in _EXTRA_SCORES:
            if all(key in scores for scores in runs):
                entry.update(_summary([scores[key] for scores in runs], f"_{key}"))
        table.append(entry)
    return table


def _summary(runs: Sequence[dict[str, Any]], suffix: str) -> dict[str, Any]:
    """Mean and per-seed rare-class IoU and mIoU, and mean rare precision and recall, keys ending in ``suffix``."""
    rare, miou = _rare_and_miou(runs)
    summary = {"rare_iou": round(statistics.mean(rare), 3), "miou": round(statistics.mean(miou), 3),
               "rare_iou_per_seed": [round(v, 3) for v in rare], "miou_per_seed": [round(v, 3) for v in miou],
               "rare_precision": _mean_rare(runs, "per_class_precision"),
               "rare_recall": _mean_rare(runs, "per_class_recall")}
    return {name + suffix: value for name, value in summary.items()}


def _rare_and_miou(runs: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Each run's rare-class IoU (0 where the class was never predicted) and mIoU."""
    return [scores["per_class_iou"].get(RARE_CLASS) or 0.0 for scores in runs], [scores["miou"] for scores in runs]


def _mean_rare(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    """Mean over runs of the rare class's ``key`` score, skipping runs where it is undefined."""
    values = [scores.get(key, {}).get(RARE_CLASS) for scores in runs]
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 2) if values else None
