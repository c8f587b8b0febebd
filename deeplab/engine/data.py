"""Training and validation data loaders: a reproducible endless stream of augmented crops, full validation images.

The data order and each sample's augmentation are a function of ``(seed, position)`` alone, so a run resumed at
any step, in any number of processes, sees exactly the batches it would have seen.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from .distributed import ShardedSampler, shard_dataset

__all__ = ["SeededSampler", "build_train_loader", "build_val_loader", "same_size_batches"]


class SeededSampler(Sampler):
    """Endless stream of ``(index, sample_seed)``: epoch ``e`` is a permutation drawn from ``(seed, e)``.

    The data order and every sample's augmentation are thus a function of ``(seed, position)`` only, so a run
    resumed at any step (``start`` = samples already consumed) sees exactly the batches it would have seen.
    """

    def __init__(self, num_samples: int, *, seed: int, start: int = 0) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples, self.seed, self.start = num_samples, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.num_samples)
        while True:
            rng = np.random.default_rng([self.seed, epoch])
            order, seeds = rng.permutation(self.num_samples), rng.integers(0, 2**31, self.num_samples)
            for i in range(offset, self.num_samples):
                yield int(order[i]), int(seeds[i])
            epoch, offset = epoch + 1, 0


class _SeededAugmentation(Dataset):
    """Samples of ``dataset`` passed through ``transform`` (an albumentations-backed
    ``datasets.SegmentationTransform``) reseeded per sample: reproducible and different in every worker."""

    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        image, mask = self.dataset[index]
        self.transform.set_seed(seed)
        return self.transform(image, mask)


def build_train_loader(
    dataset: Dataset, *, transform: Any, batch_size: int, workers: int, seed: int, start_step: int = 0
) -> DataLoader:
    """Endless loader of augmented batches; ``dataset`` yields raw ``(image, mask)``, ``transform`` augments.

    ``batch_size`` is the global batch: under torchrun each rank loads its ``batch_size / world_size`` share.
    """
    sampler = ShardedSampler(SeededSampler(len(dataset), seed=seed, start=start_step * batch_size),
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
