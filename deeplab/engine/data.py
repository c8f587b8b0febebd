"""Training and validation data loaders: a reproducible endless stream of augmented crops, full validation images.

The data order and each sample's augmentation are a function of ``(seed, position)`` alone, so a run resumed at
any step, in any number of processes, sees exactly the batches it would have seen.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from datasets.paste import paste_object

from .distributed import ShardedSampler, shard_dataset

__all__ = ["NO_FOCUS", "RarityDraw", "SeededSampler", "build_train_loader", "build_val_loader", "same_size_batches"]

NO_FOCUS = -1  # a sample's focus class when its crop is an ordinary random one


@dataclass(frozen=True)
class RarityDraw:
    """For a ``share`` of the samples, a class drawn with ``class_probs`` and an image that holds it
    (``images_by_class[c]``): the draw behind class-balanced crops and behind copy-paste."""

    share: float
    class_probs: np.ndarray
    images_by_class: tuple[np.ndarray, ...]

    @classmethod
    def from_counts(cls, counts: np.ndarray, *, share: float, exclude: Sequence[int] = ()) -> RarityDraw:
        """From per-image class pixel counts (images x classes): classes drawn in inverse proportion to their
        pixel share, so the rarest classes are drawn most; classes no image holds, and ``exclude``, never."""
        pixels = counts.sum(axis=0).astype(np.float64)
        probs = np.zeros_like(pixels)
        probs[pixels > 0] = 1.0 / pixels[pixels > 0]
        probs[list(exclude)] = 0.0
        if probs.sum() == 0:
            raise ValueError("no class to draw: every class is excluded or absent")
        images = tuple(np.flatnonzero(counts[:, c] > 0) for c in range(counts.shape[1]))
        return cls(share=share, class_probs=probs / probs.sum(), images_by_class=images)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For ``n`` positions: the image index and class drawn, both :data:`NO_FOCUS` where the position is not
        chosen."""
        chosen = rng.random(n) < self.share
        classes = rng.choice(len(self.class_probs), size=n, p=self.class_probs)
        picks = rng.random(n)
        images, drawn = np.full(n, NO_FOCUS), np.full(n, NO_FOCUS)
        for i in np.flatnonzero(chosen):
            holders = self.images_by_class[classes[i]]
            images[i], drawn[i] = holders[int(picks[i] * len(holders))], classes[i]
        return images, drawn


class SeededSampler(Sampler):
    """Endless stream of ``(index, sample_seed, focus_class, paste_index, paste_class)``: epoch ``e`` is a
    permutation drawn from ``(seed, e)``.

    With ``focus`` (class-balanced crops), each position is, with probability ``focus.share``, replaced by an image
    holding a class drawn by rarity, and that class is the sample's ``focus_class`` (else :data:`NO_FOCUS`). With
    ``paste`` (copy-paste), a ``paste.share`` of the positions also names an image holding a class drawn by rarity,
    one of whose objects is pasted into the sample (else both are -1). These draws come from ``(seed, e, 1)`` and
    ``(seed, e, 2)``, so the rest of the stream is the same with and without them. The data order and every
    sample's augmentation are thus a function of ``(seed, position)`` only, so a run resumed at any step
    (``start`` = samples already consumed) sees exactly the batches it would have seen.
    """

    def __init__(self, num_samples: int, *, seed: int, start: int = 0, focus: RarityDraw | None = None,
                 paste: RarityDraw | None = None) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples, self.seed, self.start, self.focus, self.paste = num_samples, seed, start, focus, paste

    def __iter__(self) -> Iterator[tuple[int, int, int, int, int]]:
        epoch, offset = divmod(self.start, self.num_samples)
        n = self.num_samples
        while True:
            rng = np.random.default_rng([self.seed, epoch])
            order, seeds = rng.permutation(n), rng.integers(0, 2**31, n)
            focus = paste_index = paste_class = np.full(n, NO_FOCUS)
            if self.focus is not None:
                images, focus = self.focus.draw(np.random.default_rng([self.seed, epoch, 1]), n)
                order = np.where(focus >= 0, images, order)
            if self.paste is not None:
                paste_index, paste_class = self.paste.draw(np.random.default_rng([self.seed, epoch, 2]), n)
            for i in range(offset, n):
                yield int(order[i]), int(seeds[i]), int(focus[i]), int(paste_index[i]), int(paste_class[i])
            epoch, offset = epoch + 1, 0


class _SeededAugmentation(Dataset):
    """Samples of ``dataset`` passed through ``transform`` (an albumentations-backed
    ``datasets.SegmentationTransform``) reseeded per sample: reproducible and different in every worker."""

    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __getitem__(self, item: tuple[int, int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed, focus_class, paste_index, paste_class = item
        image, mask = self.dataset[index]
        if paste_class >= 0:
            source_image, source_mask = self.dataset[paste_index]
            image, mask = paste_object(np.asarray(image), np.asarray(mask), np.asarray(source_image),
                                       np.asarray(source_mask), paste_class, np.random.default_rng([seed, 1]))
        self.transform.set_seed(seed)
        return self.transform(image, mask, focus_class=focus_class)


def build_train_loader(
    dataset: Dataset, *, transform: Any, batch_size: int, workers: int, seed: int, start_sample: int = 0,
    focus: RarityDraw | None = None, paste: RarityDraw | None = None,
) -> DataLoader:
    """Endless loader of augmented batches from position ``start_sample`` of the stream (the samples a resumed run
    consumed); ``dataset`` yields raw ``(image, mask)``, ``transform`` augments (and centres its crop on the sample's
    focus class); ``paste`` pastes rare objects first (see :class:`SeededSampler`).

    ``batch_size`` is the global batch: under torchrun each rank loads its ``batch_size / world_size`` share.
    """
    sampler = ShardedSampler(SeededSampler(len(dataset), seed=seed, start=start_sample, focus=focus, paste=paste),
                             global_batch=batch_size)
    return DataLoader(
        _SeededAugmentation(dataset, transform),
        batch_size=sampler.per_rank,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        # A private generator keeps the loader from drawing on the global RNG, which resumes restore.
        generator=torch.Generator().manual_seed(seed),
    )


def build_val_loader(dataset: Dataset, *, batch_size: int = 1, workers: int = 0) -> DataLoader:
    """Loader over full validation images in a fixed order; under torchrun over this rank's disjoint shard,
    whose confusion matrix :func:`validate` sums over ranks.

    VOC's images differ in size, and padding would change the predictions near the borders, so a batch holds
    only images of one size (``dataset`` tells sizes by ``image_size(i)``): any batch size scores the same.
    """
    shard = shard_dataset(dataset)
    if batch_size == 1:
        return DataLoader(shard, batch_size=1, shuffle=False, num_workers=workers, generator=torch.Generator())
    return DataLoader(shard, batch_sampler=same_size_batches(_image_sizes(shard), batch_size), num_workers=workers,
                      generator=torch.Generator())


def same_size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` images of equal size, in order of first index."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(index)
    batches = [group[i : i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]
    return sorted(batches, key=lambda batch: batch[0])


def _image_sizes(dataset: Dataset) -> list[tuple[int, int]]:
    """``(height, width)`` of every item of a dataset (or of a :class:`~torch.utils.data.Subset` of one)."""
    base, indices = dataset, range(len(dataset))
    if isinstance(dataset, Subset):
        base, indices = dataset.dataset, dataset.indices
    return [base.image_size(i) for i in indices]
