"""Per-class loss weights: ``auto`` from the training split's pixel shares, or one number per line of a file.

``auto`` weighs class ``c`` by ``share_c ** -0.5`` (the square root of inverse frequency: plain inverse frequency,
or median-frequency balancing, trades the common classes away for the rare ones), scales the weights so that the
average labelled pixel weighs 1, and clips them to ``[1 / WEIGHT_BOUND, WEIGHT_BOUND]``. A class absent from the
split gets the bound: finite, and it only matters to losses that also score predictions of it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets import DataError
from datasets.voc import read_text_lines

from ..errors import UserError

__all__ = ["WEIGHT_BOUND", "auto_class_weights", "describe_weights", "read_class_weights", "resolve_class_weights"]

WEIGHT_BOUND = 10.0


def auto_class_weights(pixels: np.ndarray) -> np.ndarray:
    """Bounded inverse-square-root-frequency weights from per-class pixel counts (see the module docstring)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.sum() <= 0:
        return np.ones_like(pixels)
    share = pixels / pixels.sum()
    present = share > 0
    raw = np.zeros_like(share)
    raw[present] = share[present] ** -0.5
    raw /= (share * raw).sum()  # the pixel-weighted mean weight is 1, so the loss keeps its scale
    raw[~present] = WEIGHT_BOUND
    return np.clip(raw, 1.0 / WEIGHT_BOUND, WEIGHT_BOUND)


def read_class_weights(path: str | Path, num_classes: int) -> np.ndarray:
    """One non-negative number per line, line i = class id i (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = read_text_lines(path)
    except DataError as exc:
        raise UserError(f"--class-weights {exc}; give auto, none or a file with one weight per class line") from None
    entries = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(lines, 1)]
    entries = [(n, value) for n, value in entries if value]
    if len(entries) != num_classes:
        raise UserError(f"{path}: {len(entries)} weights, but the data has {num_classes} classes "
                        f"(one weight per line, line i = class id i)")
    weights = []
    for n, value in entries:
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"{path}: line {n}: {value!r} is not a non-negative number")
        weights.append(weight)
    if not any(weights):
        raise UserError(f"{path}: every weight is 0; at least one class must count")
    return np.asarray(weights, dtype=np.float64)


def resolve_class_weights(
    setting: str, *, num_classes: int, pixels: np.ndarray | None = None
) -> np.ndarray | None:
    """``none`` -> None, ``auto`` -> :func:`auto_class_weights` of ``pixels`` (per-class counts), else a file."""
    if setting == "none":
        return None
    if setting == "auto":
        if pixels is None:
            raise ValueError("auto class weights need the split's pixel counts")
        return auto_class_weights(pixels)
    return read_class_weights(setting, num_classes)


def describe_weights(weights: Sequence[float], class_names: Sequence[str]) -> str:
    """``background 0.62, circle 1.96, ...`` for the run's log."""
    return ", ".join(f"{name} {weight:.3g}" for name, weight in zip(class_names, weights))
