"""Data loaders: the training sampler (every epoch a permutation, resumable mid-epoch with the same stream),
class-balanced crops and copy-paste (the rare class at the asked rate, reproducibly) and validation batches of
equal-sized images (any batch size scores the same)."""
from __future__ import annotations

from itertools import islice

import numpy as np
import torch

from datasets import VOCSegmentation, build_eval_transform, build_train_transform
from datasets.class_stats import class_pixel_counts
from deeplab import build_model
from deeplab.engine.data import RarityDraw, SeededSampler, build_train_loader, build_val_loader, same_size_batches
from deeplab.evaluation import evaluate


def test_sampler_resumed_mid_epoch_continues_the_same_stream():
    full = list(islice(SeededSampler(7, seed=3), 30))
    assert sorted(item[0] for item in full[:7]) == list(range(7))  # each epoch is a permutation
    assert [item[0] for item in full[:7]] != [item[0] for item in full[7:14]]  # reshuffled every epoch
    assert {item[2:] for item in full} == {(-1, -1, -1)}  # no focus or paste asked, none given
    assert list(islice(SeededSampler(7, seed=3, start=11), 19)) == full[11:]
    assert list(islice(SeededSampler(7, seed=4), 30)) != full


def _rare_blob_dataset(tmp_path, make_voc_folder):
    """12 background images of 64x64; four hold a 3x3 blob of class 2, six a 20x20 square of class 1."""
    rng = np.random.default_rng(1)
    masks = {}
    for i in range(12):
        mask = np.zeros((64, 64), np.uint8)
        if i < 6:
            y, x = rng.integers(0, 44, 2)
            mask[y:y + 20, x:x + 20] = 1
        if i % 3 == 0:
            y, x = rng.integers(0, 61, 2)
            mask[y:y + 3, x:x + 3] = 2
        masks[f"m{i}"] = mask
    make_voc_folder(tmp_path, masks, classes=["bg", "big", "rare"])
    return VOCSegmentation(tmp_path, split="train")


def _training_masks(dataset, *, crop_size: int, batches: int, batch: int, **draws) -> torch.Tensor:
    """The masks of the first ``batches`` training batches (seed 0, no rescaling), stacked."""
    transform = build_train_transform(crop_size=crop_size, mean=(0.5,) * 3, std=(0.5,) * 3, scale=(1.0, 1.0))
    loader = build_train_loader(dataset, transform=transform, batch_size=batch, workers=0, seed=0, **draws)
    return torch.cat([masks for _, masks in islice(loader, batches)])


def test_class_balanced_crops_hold_the_rare_class_at_the_asked_rate(tmp_path, make_voc_folder):
    dataset = _rare_blob_dataset(tmp_path, make_voc_folder)
    counts = class_pixel_counts(dataset)
    share, draws, batch = 0.5, 240, 8
    focus = RarityDraw.from_counts(counts, share=share)
    assert focus.class_probs[2] > 0.9 and [len(i) for i in focus.images_by_class] == [12, 6, 4]

    def crops(focus_spec):
        return _training_masks(dataset, crop_size=16, batches=draws // batch, batch=batch, focus=focus_spec)

    stream = list(islice(SeededSampler(len(dataset), seed=0, focus=focus), draws))
    focused = np.array([item[2] for item in stream])
    masks = crops(focus)
    holds_rare = (masks == 2).flatten(1).any(dim=1).numpy()
    # Every crop centred on the rare class holds it; such crops come at share x P(rare drawn), within 4 sigma.
    assert holds_rare[focused == 2].all()
    expected = share * focus.class_probs[2]
    assert abs((focused == 2).mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / draws)
    baseline = (crops(None) == 2).flatten(1).any(dim=1).float().mean().item()
    assert baseline < 0.15 and holds_rare.mean() >= expected
    # Reproducible from (seed, position): the same crops again, and a resumed stream continues it.
    assert torch.equal(crops(focus), masks)
    assert list(islice(SeededSampler(len(dataset), seed=0, start=37, focus=focus), draws - 37)) == stream[37:]
    # Without focus the stream is today's: the same images and seeds as a sampler that never heard of focus.
    plain = list(islice(SeededSampler(len(dataset), seed=0), draws))
    assert [item[:2] for item in stream if item[2] == -1] == [a[:2] for a, f in zip(plain, focused) if f == -1]


def test_copy_paste_adds_the_rare_class_to_the_asked_share_and_leaves_the_rest_alone(tmp_path, make_voc_folder):
    dataset = _rare_blob_dataset(tmp_path, make_voc_folder)
    counts = class_pixel_counts(dataset)
    paste = RarityDraw.from_counts(counts, share=0.5, exclude=(0,))
    assert paste.class_probs[0] == 0 and paste.class_probs[2] > 0.9  # background is never pasted
    draws, batch = 96, 8

    def batches(paste_spec):
        return _training_masks(dataset, crop_size=64, batches=draws // batch, batch=batch, paste=paste_spec)

    stream = list(islice(SeededSampler(len(dataset), seed=0, paste=paste), draws))
    pasted = np.array([item[4] for item in stream])
    assert all(counts[item[3], item[4]] > 0 for item in stream if item[4] >= 0)  # the source holds the class
    plain, masks = batches(None), batches(paste)
    rare_pixels = (masks == 2).flatten(1).sum(dim=1).numpy()
    plain_rare = (plain == 2).flatten(1).sum(dim=1).numpy()
    # The whole 64x64 image is the crop, so every paste of the 3x3 blob adds its 9 pixels; other samples are as
    # without copy-paste, pixel for pixel, because the paste's draws are a stream of their own.
    assert (rare_pixels[pasted == 2] >= 9).all() and (rare_pixels[pasted == 2] > plain_rare[pasted == 2]).all()
    assert torch.equal(masks[torch.from_numpy(pasted < 0)], plain[torch.from_numpy(pasted < 0)])
    assert 0.25 < (pasted >= 0).mean() < 0.75
    assert torch.equal(batches(paste), masks)  # reproducible from (seed, position)


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
