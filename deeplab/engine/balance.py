"""What a run does about class imbalance: its loss (with class weights and hard-pixel mining), its
class-balanced crops and its copy-paste, from the settings and the training split's class pixel counts."""
from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from .class_weights import WEIGHT_BOUND, describe_weights, read_class_weights, resolve_class_weights
from .config import TrainConfig
from .data import RarityDraw
from .losses import SegmentationLoss, build_loss

__all__ = ["prepare_balance", "read_weights_file_first"]


def prepare_balance(
    config: TrainConfig, counts: np.ndarray, class_names: Sequence[str], *, announce: bool = True
) -> tuple[SegmentationLoss, RarityDraw | None, RarityDraw | None]:
    """The run's loss, crop focus and copy-paste draw from the training split's ``counts[image, class]`` of pixels;
    with ``announce``, print the class weights and warn (one line) about classes that never occur in the split
    under ``auto`` weights."""
    pixels = counts.sum(axis=0)
    weights = _class_weights(config, num_classes=len(class_names), pixels=pixels, announce=announce)
    _check_weights_reach_the_split(config, weights, pixels, class_names)
    if announce and weights is not None:
        print(f"class weights ({config.class_weights}): {describe_weights(weights, class_names)}")
        if config.class_weights == "auto":
            _warn_absent(class_names, pixels, split=config.split)
    criterion = build_loss(config.loss, num_classes=len(class_names),
                           class_weights=weights.tolist() if weights is not None else None, ohem=config.ohem)
    focus = paste = None
    if config.balanced_crops > 0:
        focus = _rarity_draw(counts, config, "balanced_crops", "labelled pixel to crop around")
    if config.copy_paste > 0:  # background (class 0) is never pasted: it is the scene objects are pasted into
        paste = _rarity_draw(counts, config, "copy_paste", "object to paste, only background", exclude=(0,))
    return criterion, focus, paste


def read_weights_file_first(config: TrainConfig, *, num_classes: int) -> None:
    """Read a new run's ``--class-weights FILE`` into its settings before the split is counted, which can take
    minutes on a large split: a mistake in the file is then the first thing said, not the last."""
    if config.class_weight_values is None and config.class_weights not in ("auto", "none"):
        config.class_weight_values = read_class_weights(config.class_weights, num_classes).tolist()


def _class_weights(config: TrainConfig, *, num_classes: int, pixels: np.ndarray | None,
                   announce: bool) -> np.ndarray | None:
    """The weights a resumed run stored in its settings, else those ``--class-weights`` gives, stored there (the run
    saves them): editing a weights file cannot change a run under way."""
    if config.class_weight_values is None:
        weights = resolve_class_weights(config.class_weights, num_classes=num_classes, pixels=pixels)
        config.class_weight_values = weights.tolist() if weights is not None else None
        return weights
    stored = np.asarray(config.class_weight_values, dtype=np.float64)
    if announce:
        _warn_changed(config, stored, num_classes=num_classes, pixels=pixels)
    return stored


def _check_weights_reach_the_split(config: TrainConfig, weights: np.ndarray | None, pixels: np.ndarray,
                                   class_names: Sequence[str]) -> None:
    """Refuse weights of 0 for every class the split holds (the loss has a weighted pixel term, or the settings
    refused them): it would be 0 (or only push down classes no image shows) at every pixel, and the run would learn
    nothing from it."""
    if weights is None or weights[pixels > 0].any():
        return
    held = ", ".join(name for name, count in zip(class_names, pixels) if count)
    raise UserError(f"--class-weights {config.class_weights}: every class split {config.split} holds ({held}) "
                    "weighs 0, so the weighted loss learns nothing; give at least one of them a weight above 0")


def _rarity_draw(counts: np.ndarray, config: TrainConfig, key: str, missing: str,
                 exclude: Sequence[int] = ()) -> RarityDraw:
    """The draw of setting ``key`` (a share); a split with no class to draw is one line naming the flag."""
    share = getattr(config, key)
    try:
        return RarityDraw.from_counts(counts, share=share, exclude=exclude)
    except ValueError:
        raise UserError(f"--{key.replace('_', '-')} {share}: split {config.split} holds no {missing}") from None


def _warn_changed(config: TrainConfig, stored: np.ndarray, *, num_classes: int, pixels: np.ndarray | None) -> None:
    """One line when the ``--class-weights`` setting now gives other weights than the resumed run's stored ones,
    or none at all (a file edited, removed or broken since), saying the stored ones are kept."""
    try:
        now = resolve_class_weights(config.class_weights, num_classes=num_classes, pixels=pixels)
    except UserError as exc:
        print(f"warning: {exc}; the resumed run keeps the class weights stored in its checkpoint", file=sys.stderr)
        return
    if now is None or not np.array_equal(now, stored):
        print(f"warning: --class-weights {config.class_weights} now gives other weights than this run started "
              "with; the resumed run keeps those stored in its checkpoint", file=sys.stderr)


def _warn_absent(class_names: Sequence[str], pixels: np.ndarray, *, split: str) -> None:
    """One line naming the classes with no pixel in the split (their auto weight is the bound)."""
    absent = [name for name, count in zip(class_names, pixels) if count == 0]
    if len(absent) == 1:
        print(f"warning: class {absent[0]} never occurs in split {split}; its weight is set to {WEIGHT_BOUND:g}",
              file=sys.stderr)
    elif absent:
        print(f"warning: classes {', '.join(absent)} never occur in split {split}; their weights are set to "
              f"{WEIGHT_BOUND:g}", file=sys.stderr)
