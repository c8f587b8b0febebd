"""VOC loading, custom VOC-format folders, bad-input errors and the train/eval transforms."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import (
    VOC_CLASSES,
    VOCSegmentation,
    build_eval_transform,
    build_train_transform,
    download_voc,
    load_class_names,
)
from datasets.voc import save_label_png
from deeplab.errors import UserError

VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_mini"
MEAN, STD = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)


def make_voc_folder(root: Path, masks: dict[str, np.ndarray], split: str = "train",
                    classes: list[str] | None = None) -> Path:
    """Write a tiny VOC-format folder: a random JPEG per mask, the masks as palette PNGs, one split list."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for sample_id, mask in masks.items():
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "JPEGImages" / f"{sample_id}.jpg")
        save_label_png(base / "SegmentationClass" / f"{sample_id}.png", mask)
    (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(masks) + "\n")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return base


def test_voc_mini_samples():
    ds = VOCSegmentation(VOC_MINI, split="val")
    assert len(ds) == 8 and ds.num_classes == 21 and ds.class_names == list(VOC_CLASSES)
    seen = set()
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.dtype == np.uint8 and image.shape == (513, 513, 3)
        assert mask.dtype == np.uint8 and mask.shape == (513, 513)
        assert ds.image_path(i).name == f"{ds.ids[i]}.jpg" and ds.mask_path(i).name == f"{ds.ids[i]}.png"
        seen |= set(np.unique(mask).tolist())
    assert 255 in seen and 0 in seen and seen <= set(range(21)) | {255}
    assert len(seen - {0, 255}) >= 3  # several object classes, not all background


def test_custom_folder_with_classes_txt(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10], mask[12:, 20:] = 1, 2
    mask[0, :] = 255
    make_voc_folder(tmp_path, {"a": mask, "b": np.full((20, 30), 2, np.uint8)}, classes=["bg", "cat", "dog"])
    ds = VOCSegmentation(tmp_path, split="train")
    assert ds.class_names == ["bg", "cat", "dog"] and ds.num_classes == 3 and ds.ids == ["a", "b"]
    image, got = ds[0]
    assert image.shape == (20, 30, 3) and np.array_equal(got, mask)
    assert VOCSegmentation(tmp_path, class_names=["x"] * 4).num_classes == 4


def test_load_class_names(tmp_path):
    assert load_class_names(tmp_path) == list(VOC_CLASSES) and VOC_CLASSES[0] == "background"
    (tmp_path / "classes.txt").write_text("bg\nroad\n\n")
    assert load_class_names(tmp_path) == ["bg", "road"]
    for bad in ("bg\n\nroad\n", "bg\nbg\n", ""):
        (tmp_path / "classes.txt").write_text(bad)
        with pytest.raises(UserError, match="classes.txt"):
            load_class_names(tmp_path)


def test_greyscale_jpeg_becomes_rgb(tmp_path):
    base = make_voc_folder(tmp_path, {"g": np.zeros((8, 9), np.uint8)})
    Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L").save(base / "JPEGImages" / "g.jpg")
    image, _ = VOCSegmentation(tmp_path)[0]
    assert image.shape == (8, 9, 3) and abs(int(image.mean()) - 77) <= 1


def _assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_missing_folder_and_split(tmp_path):
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path / "nowhere")
    _assert_one_line(exc, str(tmp_path / "nowhere" / "VOCdevkit" / "VOC2012"), "--download", "VOCtrainval")
    make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path, split="val")
    _assert_one_line(exc, "val.txt", "not found")
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path, split="train_aug")
    _assert_one_line(exc, "train_aug.txt", "convert_sbd")


def test_empty_split(tmp_path):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8)})
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("\n  \n")
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, "train.txt", "empty")


@pytest.mark.parametrize("kind", ["JPEGImages/b.jpg", "SegmentationClass/b.png"])
def test_listed_id_with_missing_file(tmp_path, kind):
    base = make_voc_folder(tmp_path, {"a": np.zeros((4, 4), np.uint8), "b": np.zeros((4, 4), np.uint8)})
    (base / kind).unlink()
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path)
    _assert_one_line(exc, str(base / kind), "missing")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4), "image"),
    (_truncate, "corrupt or truncated image"),
    (lambda p: p.write_text("this is a text file, not a JPEG\n"), "not an image file"),
])
def test_bad_image_file(tmp_path, damage, words):
    base = make_voc_folder(tmp_path, {"a": np.ones((64, 64), np.uint8)})
    path = base / "JPEGImages" / "a.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    damage(path)
    ds = VOCSegmentation(tmp_path)
    with pytest.raises(UserError) as exc:
        ds[0]
    _assert_one_line(exc, str(path), words)


def test_mask_size_differs_from_image(tmp_path):
    base = make_voc_folder(tmp_path, {"a": np.zeros((10, 12), np.uint8)})
    save_label_png(base / "SegmentationClass" / "a.png", np.zeros((10, 13), np.uint8))
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, str(base / "SegmentationClass" / "a.png"), "13x10", "12x10")


def test_bad_label_values(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = 3, 7, 255
    base = make_voc_folder(tmp_path, {"a": mask}, classes=["bg", "a", "b"])
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, str(base / "SegmentationClass" / "a.png"), "[3, 7]")
    mask[0, 0], mask[1, 1] = 2, 2
    save_label_png(base / "SegmentationClass" / "a.png", mask)
    assert VOCSegmentation(tmp_path)[0][1].max() == 255


def test_colour_mask_rejected(tmp_path):
    base = make_voc_folder(tmp_path, {"a": np.zeros((6, 6), np.uint8)})
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(base / "SegmentationClass" / "a.png")
    with pytest.raises(UserError) as exc:
        VOCSegmentation(tmp_path)[0]
    _assert_one_line(exc, "a.png", "mode RGB")


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torchvision.datasets, "VOCSegmentation", offline)
    with pytest.raises(UserError) as exc:
        download_voc(tmp_path)
    _assert_one_line(exc, "VOCtrainval_11-May-2012.tar", "extract", str(tmp_path))


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


def test_transforms_pickle_and_dataloader_with_workers():
    train = build_train_transform(crop_size=64, mean=MEAN, std=STD)
    assert isinstance(pickle.loads(pickle.dumps(build_eval_transform(mean=MEAN, std=STD))), type(train))
    ds = pickle.loads(pickle.dumps(VOCSegmentation(VOC_MINI, split="train", transform=train)))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    assert len(batches) == 2
    for x, y in batches:
        assert x.shape == (4, 3, 64, 64) and y.shape == (4, 64, 64) and y.dtype == torch.int64
