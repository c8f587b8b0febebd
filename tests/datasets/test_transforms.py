"""Training augmentation and evaluation normalisation: shapes, nearest-neighbour masks, mean/std, flips."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from datasets import VOCSegmentation, build_eval_transform, build_train_transform, normalize_image

MEAN, STD = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)


def test_train_transform_shapes_and_nearest_masks():
    rng = np.random.default_rng(0)
    labels = np.array([0, 3, 7], np.uint8)
    transform = build_train_transform(crop_size=48, mean=MEAN, std=STD)
    padded = False
    for h, w in [(20, 30), (48, 48), (97, 61)]:
        mask = labels[rng.integers(0, 3, (h, w))]  # pixel noise: any interpolation would create new values
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for _ in range(5):
            x, y = transform(image, mask)
            assert x.shape == (3, 48, 48) and x.dtype == torch.float32
            assert y.shape == (48, 48) and y.dtype == torch.int64
            assert set(y.unique().tolist()) <= {0, 3, 7, 255}
            padded |= bool((y == 255).any())
    assert padded
    with pytest.raises(ValueError, match="expected a uint8 H x W x 3 RGB image, got float64"):
        transform(image / 255.0, mask)  # normalised as 0..255 pixels, it trained on a near-constant input


def _expected(value: float) -> torch.Tensor:
    return (value / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)


def test_normalisation_and_padding_use_given_mean_std():
    image = np.full((30, 40, 3), 128, np.uint8)
    mask = np.ones((30, 40), np.uint8)
    x, y = build_eval_transform(mean=MEAN, std=STD)(image, mask)
    assert x.shape == (3, 30, 40) and torch.equal(y, torch.ones(30, 40, dtype=torch.int64))
    assert torch.allclose(x.mean(dim=(1, 2)), _expected(128), atol=1e-5)
    x, y = build_train_transform(crop_size=64, mean=MEAN, std=STD)(image, mask)
    inside, pad = x[:, y == 1], x[:, y == 255]
    assert pad.shape[1] > 0 and torch.allclose(pad, torch.zeros(()), atol=0.03)  # padded with the mean
    assert torch.allclose(inside, _expected(128)[:, None], atol=1e-4)


def test_flip_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 6, (40, 40)).astype(np.uint8)
    image = np.repeat(mask[..., None] * 40, 3, axis=2).astype(np.uint8)
    transform = build_train_transform(crop_size=40, mean=(0, 0, 0), std=(1, 1, 1), scale=(1.0, 1.0))
    orientations = set()
    for _ in range(30):
        x, y = transform(image, mask)
        assert torch.allclose(x[0] * 255, y.float() * 40, atol=1e-3)
        flipped = torch.equal(y, torch.from_numpy(mask[:, ::-1].astype(np.int64)))
        assert flipped or torch.equal(y, torch.from_numpy(mask.astype(np.int64)))
        orientations.add(flipped)
    assert orientations == {True, False}


def test_any_orientation_shows_all_eight_turns_and_mirrors_with_the_mask_aligned():
    rng = np.random.default_rng(4)
    mask = rng.integers(0, 6, (40, 40)).astype(np.uint8)  # no symmetry: each orientation is told apart
    image = np.repeat(mask[..., None] * 40, 3, axis=2).astype(np.uint8)
    square = [np.rot90(m, k) for m in (mask, mask.T) for k in range(4)]  # the eight orientations of the square
    transform = build_train_transform(crop_size=40, mean=(0, 0, 0), std=(1, 1, 1), scale=(1.0, 1.0),
                                      any_orientation=True)
    transform.set_seed(0)
    seen = set()
    for _ in range(80):
        x, y = transform(image, mask)
        assert torch.allclose(x[0] * 255, y.float() * 40, atol=1e-3)
        seen.add(next(k for k, m in enumerate(square) if np.array_equal(y.numpy(), m)))
    assert seen == set(range(8))


def _samples(transform, image, mask, seed: int = 3, count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    transform.set_seed(seed)
    return [transform(image, mask) for _ in range(count)]


def test_colour_jitter_changes_colours_never_masks_nor_padding():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 5:25] = 2
    image = np.where(mask[..., None] == 2, (200, 40, 40), (90, 90, 90)).astype(np.uint8)  # a red patch on grey
    plain = _samples(build_train_transform(crop_size=64, mean=MEAN, std=STD), image, mask)
    jittered = _samples(build_train_transform(crop_size=64, mean=MEAN, std=STD, color_jitter=1.0), image, mask)
    red_lost_at_least_once = False
    for (x0, y0), (x1, y1) in zip(plain, jittered):
        assert torch.equal(y0, y1)  # same seed: the same geometry, the mask untouched
        assert not torch.allclose(x0, x1, atol=0.05)
        assert torch.allclose(x1[:, y1 == 255], torch.zeros(()), atol=0.03)  # padding still the mean
        patch = x1[:, y1 == 2] * torch.tensor(STD)[:, None] + torch.tensor(MEAN)[:, None]
        red_lost_at_least_once |= bool(patch.mean(dim=1).argmax() != 0)  # the hue moved off red
    assert red_lost_at_least_once


def test_no_colour_jitter_is_the_plain_pipeline_and_bad_shares_are_refused():
    rng = np.random.default_rng(2)
    image, mask = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 4, (40, 50)).astype(np.uint8)
    plain = _samples(build_train_transform(crop_size=48, mean=MEAN, std=STD), image, mask)
    zero = _samples(build_train_transform(crop_size=48, mean=MEAN, std=STD, color_jitter=0.0), image, mask)
    assert all(torch.equal(a, b) for pair in zip(plain, zero) for a, b in zip(*pair))
    with pytest.raises(ValueError, match="color_jitter"):
        build_train_transform(crop_size=48, mean=MEAN, std=STD, color_jitter=1.5)



def test_a_mean_and_std_for_0_to_255_pixels_are_refused_by_both_transforms():
    """mmsegmentation's values made every training and evaluation input nearly constant, without a word."""
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    for build in (build_eval_transform, lambda **kw: build_train_transform(crop_size=48, **kw)):
        with pytest.raises(ValueError, match=r"mean \[123.675, 116.28, 103.53\] is not of pixels scaled to \[0, 1\]"):
            build(mean=mean, std=std)


def test_transforms_pickle_and_dataloader_with_workers(voc_mini):
    train = build_train_transform(crop_size=64, mean=MEAN, std=STD)
    evaluation = build_eval_transform(mean=MEAN, std=STD)
    image, mask = np.full((5, 6, 3), 77, np.uint8), np.ones((5, 6), np.uint8)
    restored = pickle.loads(pickle.dumps(evaluation))(image, mask)
    assert all(torch.equal(a, b) for a, b in zip(restored, evaluation(image, mask)))
    ds = pickle.loads(pickle.dumps(VOCSegmentation(voc_mini, split="train", transform=train)))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    assert len(batches) == 2
    for x, y in batches:
        assert x.shape == (4, 3, 64, 64) and y.shape == (4, 64, 64) and y.dtype == torch.int64


class _OneImage(torch.utils.data.Dataset):
    """The same image and mask four times, through ``transform`` (reseeded with ``seed`` before each when given):
    only the augmentation tells the items apart."""

    def __init__(self, transform, seed: int | None = None) -> None:
        self.transform, self.seed = transform, seed
        rng = np.random.default_rng(4)
        self.image, self.mask = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), np.ones((40, 50), np.uint8)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.seed is not None:
            self.transform.set_seed(self.seed)
        return self.transform(self.image, self.mask)


def test_dataloader_workers_draw_their_own_augmentations_every_epoch():
    """A plain DataLoader with workers: each worker and each epoch augments anew, and a seeded run repeats."""
    dataset = _OneImage(build_train_transform(crop_size=32, mean=MEAN, std=STD))

    def epochs(seed: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2,
                                             generator=torch.Generator().manual_seed(seed))
        return [x[0] for _ in range(2) for x, _ in loader]

    samples = epochs(0)
    assert len({tuple(x.flatten().tolist()) for x in samples}) == len(samples)
    assert all(torch.equal(a, b) for a, b in zip(samples, epochs(0)))
    dataset.transform.set_seed(7)  # seeded in the main process: the workers still draw apart
    assert len({tuple(x.flatten().tolist()) for x in epochs(0)}) == len(samples)


def test_set_seed_in_the_worker_wins_over_the_worker_seed():
    dataset = _OneImage(build_train_transform(crop_size=32, mean=MEAN, std=STD), seed=5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    expected = _samples(build_train_transform(crop_size=32, mean=MEAN, std=STD), dataset.image, dataset.mask,
                        seed=5, count=1)[0][0]
    assert all(torch.equal(x[0], expected) for x, _ in loader)


def test_normalize_image_equals_albumentations_normalize():
    """Prediction normalises without albumentations; it must give what training's pipeline gives."""
    import albumentations as A

    image = np.random.default_rng(3).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    expected = A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0)(image=image)["image"].transpose(2, 0, 1)
    np.testing.assert_allclose(normalize_image(image, MEAN, STD).numpy(), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="expected a uint8 H x W x 3 RGB image, got float64"):
        normalize_image(image / 255.0, MEAN, STD)  # a float image in [0, 1] became nearly constant, without a word
