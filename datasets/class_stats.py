"""How many pixels of each class every image of a split holds: the input to class weights and class-balanced
crops, counted once (each mask checked against its image on the way, so a run finds a bad one before it trains)
and cached beside the data (``<root>/class_pixels_<split>.json``).

The cache is keyed by the split's id list, the class count, the colours RGB masks are decoded with (``labelmap.txt``
or the VOC palette) and the size, modification time and change time of each mask and image file, so editing the
split, the labelmap or any of its files recounts it (the change time, which no tool sets back, also catches an edit
that kept the size and had its modification time restored). It is written atomically; a read-only data folder is
only counted, never cached.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch.utils.data

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
    # Its own generator: a loader seeds its workers from the global RNG otherwise, and whether the cache was
    # current must not change a seeded run's random draws.
    loader = torch.utils.data.DataLoader(_MaskCounts(dataset), batch_size=None, num_workers=workers,
                                         generator=torch.Generator())
    counts = np.stack([np.asarray(row) for row in loader]).astype(np.int64)
    _write_cache(path, key, counts)
    return counts


class _MaskCounts(torch.utils.data.Dataset):
    """Per-mask class histograms (each mask checked on the way), so a DataLoader can decode them in parallel."""

    def __init__(self, dataset: VOCSegmentation) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.dataset.mask_pixels(i)


def _split_key(dataset: VOCSegmentation) -> str:
    """A digest of what the counts (and the checks made while counting) depend on: the ids, the class count, the
    mask colours, the size, mtime and ctime of every mask and image."""
    digest = hashlib.sha256(f"{_FORMAT}\n{dataset.split}\n{dataset.num_classes}\n{dataset.colours.fingerprint()}\n"
                            .encode())
    for i in range(len(dataset)):
        for path in (dataset.mask_path(i), dataset.image_path(i)):
            stat = path.stat()
            digest.update(f"{dataset.ids[i]}\t{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ctime_ns}\n"
                          .encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> np.ndarray | None:
    """The cached counts when the file exists, parses and carries ``key``; None otherwise (then we recount)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return np.asarray(data["counts"], dtype=np.int64) if data.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, key: str, counts: np.ndarray) -> None:
    """Write the counts to a temporary file and rename it over ``path``; skip quietly if the folder is read-only. A
    Ctrl-C meanwhile leaves no temporary file in the user's data folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"format": _FORMAT, "key": key, "counts": counts.tolist()}) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only data folder: counted, not cached
        pass
    finally:  # gone once renamed; after a failure or a Ctrl-C, removed
        tmp.unlink(missing_ok=True)
