"""How many pixels of each class every image of a split holds: the input to class weights and class-balanced
crops, counted once and cached beside the data (``<root>/class_pixels_<split>.json``).

The cache is keyed by the split's id list, the class count and each mask file's size and modification time, so
editing the split or any of its masks recounts it. It is written atomically; a read-only data folder is only
counted, never cached.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch.utils.data

from .image_files import read_label_png
from .voc import VOCSegmentation

__all__ = ["class_pixel_counts", "class_pixels_cache"]

_FORMAT = "deeplab-class-pixels-1"


def class_pixels_cache(dataset: VOCSegmentation) -> Path:
    """Where the counts of ``dataset``'s split are cached."""
    return dataset.root / f"class_pixels_{dataset.split}.json"


def class_pixel_counts(dataset: VOCSegmentation, *, workers: int = 0) -> np.ndarray:
    """``counts[i, c]``: pixels of class ``c`` in mask ``i`` of the split (int64, void not counted), from the cache
    when it matches the split's files, else counted with ``workers`` processes and cached."""
    path, key = class_pixels_cache(dataset), _split_key(dataset)
    cached = _read_cache(path, key)
    if cached is not None and cached.shape == (len(dataset), dataset.num_classes):
        return cached
    loader = torch.utils.data.DataLoader(_MaskCounts(dataset), batch_size=None, num_workers=workers)
    counts = np.stack([np.asarray(row) for row in loader]).astype(np.int64)
    _write_cache(path, key, counts)
    return counts


class _MaskCounts(torch.utils.data.Dataset):
    """Per-mask class histograms, so a DataLoader can decode the masks in parallel."""

    def __init__(self, dataset: VOCSegmentation) -> None:
        self.paths = [dataset.mask_path(i) for i in range(len(dataset))]
        self.num_classes = dataset.num_classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        mask = read_label_png(self.paths[i], self.num_classes)
        return np.bincount(mask.ravel(), minlength=self.num_classes)[: self.num_classes]


def _split_key(dataset: VOCSegmentation) -> str:
    """A digest of what the counts depend on: the ids, the class count, every mask's size and mtime."""
    digest = hashlib.sha256(f"{_FORMAT}\n{dataset.split}\n{dataset.num_classes}\n".encode())
    for i in range(len(dataset)):
        path = dataset.mask_path(i)
        stat = path.stat()
        digest.update(f"{dataset.ids[i]}\t{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> np.ndarray | None:
    """The cached counts when the file exists, parses and carries ``key``; None otherwise (then we recount)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return np.asarray(data["counts"], dtype=np.int64) if data.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, key: str, counts: np.ndarray) -> None:
    """Write the counts to a temporary file and rename it over ``path``; skip quietly if the folder is read-only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"format": _FORMAT, "key": key, "counts": counts.tolist()}) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
