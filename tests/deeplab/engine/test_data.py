"""Data loaders: the training sampler (every epoch a permutation, resumable mid-epoch) and validation batches of
equal-sized images (any batch size scores the same)."""
from __future__ import annotations

from itertools import islice

import numpy as np
import torch

from datasets import VOCSegmentation, build_eval_transform
from deeplab import build_model
from deeplab.engine.data import SeededSampler, build_val_loader, same_size_batches
from deeplab.evaluation import evaluate


def test_sampler_resumed_mid_epoch_continues_the_same_stream():
    full = list(islice(SeededSampler(7, seed=3), 30))
    assert sorted(i for i, _ in full[:7]) == list(range(7))  # each epoch is a permutation
    assert [i for i, _ in full[:7]] != [i for i, _ in full[7:14]]  # reshuffled every epoch
    assert list(islice(SeededSampler(7, seed=3, start=11), 19)) == full[11:]
    assert list(islice(SeededSampler(7, seed=4), 30)) != full


def test_same_size_batches_keep_every_index_once_and_never_mix_sizes():
    sizes = [(5, 7), (7, 5), (5, 7), (5, 7), (3, 3), (7, 5)]
    batches = same_size_batches(sizes, 2)
    assert batches == [[0, 2], [1, 5], [3], [4]]
    assert all(len({sizes[i] for i in batch}) == 1 for batch in batches)


def test_validation_in_batches_of_mixed_sizes_scores_like_batch_one(tmp_path, make_voc_folder, randomise_batchnorm):
    rng = np.random.default_rng(0)
    shapes = [(37, 45), (45, 37), (37, 45), (30, 30), (37, 45), (45, 37), (37, 45)]  # VOC mixes such sizes
    masks = {f"m{i}": rng.integers(0, 3, shape).astype(np.uint8) for i, shape in enumerate(shapes)}
    make_voc_folder(tmp_path, masks, split="val", classes=["bg", "a", "b"])
    model = randomise_batchnorm(build_model(num_classes=3, width_mult=0.25))
    dataset = VOCSegmentation(tmp_path, split="val", transform=build_eval_transform(mean=model.mean, std=model.std))
    matrices = [evaluate(model, build_val_loader(dataset, batch_size=size), num_classes=3).matrix
                for size in (1, 2, 3)]
    assert matrices[0].sum() == sum(h * w for h, w in shapes)
    assert torch.equal(matrices[0], matrices[1]) and torch.equal(matrices[0], matrices[2])
