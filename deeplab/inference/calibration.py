"""Which images calibrate an int8 engine: the ones the user names, else the checkpoint's own training images,
else the images to predict; and a digest of them, so a cached int8 engine is reused only for the same
calibration.

A checkpoint written by training records its data root and split in its run arguments; when that folder exists
here, int8 calibrates on :data:`CALIBRATION_IMAGES` images spread evenly over the training split. Training images
rather than validation ones keep the validation split untouched for measuring what int8 costs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from datasets import DataError, read_rgb
from datasets.image_files import image_size
from datasets.voc import find_image, read_split_ids, split_file, voc_dir

__all__ = [
    "CALIBRATION_IMAGES", "INPUTS", "NAMED", "Calibration", "checkpoint_images", "choose_calibration",
    "effective_max_size", "split_ids", "spread",
]

#: The source of images the user named (``--calibration DIR``).
NAMED = "--calibration"
#: The source of the images a run predicts: they change from run to run.
INPUTS = "the images to predict"
#: int8 calibrates on at most this many images: enough for stable activation ranges, about a minute of NNCF.
CALIBRATION_IMAGES = 16


@dataclass(frozen=True)
class Calibration:
    """The calibration image files and where they came from (said to the user when an engine is calibrated)."""

    paths: tuple[Path, ...]
    source: str

    def digest(self, max_size: int | None) -> str:
        """SHA-256 of the files' bytes, in order, and of the size limit they are shrunk to before calibrating."""
        digest = hashlib.sha256(f"{len(self.paths)}:{effective_max_size(self.paths, max_size)}".encode())
        for path in self.paths:
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                digest.update(b"unreadable")
        return digest.hexdigest()

    def batches(self, prepare: Callable[[np.ndarray], torch.Tensor]) -> list[torch.Tensor]:
        """The decodable images as model inputs, ``prepare`` making them exactly as they will be predicted."""
        batches, first_problem = [], None
        for path in self.paths:
            try:
                batches.append(prepare(read_rgb(path)))
            except DataError as exc:  # an unreadable or too small input is reported when its turn to be predicted comes
                first_problem = first_problem or str(exc)
        if not batches:
            raise DataError(f"none of the calibration images from {self.source} can be read and fit the model "
                            f"({first_problem})")
        return batches


def effective_max_size(paths: Sequence[Path], max_size: int | None) -> int | None:
    """``max_size`` if it shrinks any of ``paths``, else ``None``: the model inputs are then the same either way, so
    digests made with this (and the cache entries they name) serve both."""
    try:
        return max_size if max_size and any(max(image_size(path)) > max_size for path in paths) else None
    except DataError:
        return max_size  # an unreadable header: keep the limit in the digest rather than guess


def spread(paths: Sequence[Path], count: int = CALIBRATION_IMAGES) -> tuple[Path, ...]:
    """At most ``count`` of ``paths``, evenly spaced (first and last included), in order."""
    if len(paths) <= count:
        return tuple(paths)
    return tuple(paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round())


def split_ids(root: str | Path, split: str) -> list[str] | None:
    """The ids listed by a VOC-format split under ``root``; ``None`` when its list cannot be read here."""
    try:
        return read_split_ids(split_file(root, split))
    except DataError:
        return None


def checkpoint_images(ckpt: dict[str, Any]) -> tuple[Path, ...]:
    """Images of the training split recorded in the checkpoint's run arguments, if that data is on this machine."""
    args = ckpt.get("args") or {}
    root, split = args.get("data_root"), args.get("split") or "train"
    ids = split_ids(root, split) if root else None
    if not ids:
        return ()
    images = voc_dir(root) / "JPEGImages"
    return tuple(path for path in spread([find_image(images, i) for i in ids]) if path.is_file())


def choose_calibration(
    named: Sequence[Path] | None, ckpt: dict[str, Any], fallback: Sequence[Path] = ()
) -> Calibration | None:
    """The user's images, else the checkpoint's training images, else ``fallback`` (the inputs); ``None`` if none."""
    if named:
        return Calibration(spread(list(named)), NAMED)
    found = checkpoint_images(ckpt)
    if found:
        args = ckpt["args"]
        return Calibration(found, f"the checkpoint's training data ({args['data_root']}, split {args.get('split')})")
    if fallback:
        return Calibration(spread(list(fallback)), INPUTS)
    return None
