"""Class pixel counts of a split: exact per image, each mask checked on the way, counted once, recounted when the
split, a mask, an image or the mask colours (labelmap.txt) change, cached atomically, and still counted when the data
folder is read-only."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from PIL import Image

from datasets import DataError, VOCSegmentation, save_label_png
from datasets.class_stats import class_pixel_counts, class_pixels_cache


@pytest.fixture
def split(tmp_path, make_voc_folder):
    masks = {"a": np.zeros((6, 5), np.uint8), "b": np.full((4, 4), 2, np.uint8)}
    masks["a"][0, :3] = 1
    masks["a"][5, :] = 255
    make_voc_folder(tmp_path, masks, classes=["bg", "thing", "other", "never"])
    return tmp_path


def test_counts_match_a_hand_count_and_are_cached(split, monkeypatch):
    dataset = VOCSegmentation(split, split="train")
    counts = class_pixel_counts(dataset)
    # a: 30 pixels, 5 void, 3 of class 1, 22 background; b: 16 of class 2.
    assert counts.tolist() == [[22, 3, 0, 0], [0, 0, 16, 0]]
    cache = class_pixels_cache(dataset)
    assert cache.is_file() and not [p for p in split.iterdir() if p.name.endswith(".tmp")]

    def no_reading(*args, **kwargs):
        raise AssertionError("masks read although the cache is current")

    monkeypatch.setattr(VOCSegmentation, "mask_pixels", no_reading)
    assert class_pixel_counts(VOCSegmentation(split, split="train")).tolist() == counts.tolist()


def test_a_changed_mask_or_split_is_recounted(split):
    dataset = VOCSegmentation(split, split="train")
    class_pixel_counts(dataset)
    base = split / "VOCdevkit" / "VOC2012"
    save_label_png(base / "SegmentationClass" / "b.png", np.full((4, 4), 3, np.uint8))
    stamp = (base / "SegmentationClass" / "b.png").stat().st_mtime_ns + 10**9
    os.utime(base / "SegmentationClass" / "b.png", ns=(stamp, stamp))  # a new mtime even on coarse clocks
    assert class_pixel_counts(VOCSegmentation(split, split="train")).tolist() == [[22, 3, 0, 0], [0, 0, 0, 16]]
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("b\n")
    assert class_pixel_counts(VOCSegmentation(split, split="train")).tolist() == [[0, 0, 0, 16]]


def test_an_edit_that_keeps_size_and_mtime_is_recounted(split):
    """Uncompressed masks keep their size whatever they hold, and a tool may set the mtime back."""
    mask = split / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "b.png"
    Image.fromarray(np.full((4, 4), 2, np.uint8)).save(mask, compress_level=0)
    assert class_pixel_counts(VOCSegmentation(split, split="train"))[1].tolist() == [0, 0, 16, 0]
    before = mask.stat()
    time.sleep(0.05)  # file times tick with the kernel's coarse clock (a few milliseconds)
    Image.fromarray(np.full((4, 4), 3, np.uint8)).save(mask, compress_level=0)
    os.utime(mask, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert mask.stat().st_size == before.st_size
    assert class_pixel_counts(VOCSegmentation(split, split="train"))[1].tolist() == [0, 0, 0, 16]


def test_an_edited_labelmap_is_recounted(tmp_path, make_cvat_folder):
    """The same RGB masks mean other classes once labelmap.txt gives their colours to other ids."""
    mask = np.zeros((4, 5), np.uint8)
    mask[0, :3], mask[1:, :] = 1, 2
    make_cvat_folder(tmp_path, {"a": mask})
    assert class_pixel_counts(VOCSegmentation(tmp_path)).tolist() == [[2, 3, 15]]
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                           "cat:255,255,255::\nsnow:250,50,83::\n")  # cat and snow swap colours
    assert class_pixel_counts(VOCSegmentation(tmp_path)).tolist() == [[2, 15, 3]]


def test_counting_checks_each_mask_against_its_image_even_after_caching(split):
    class_pixel_counts(VOCSegmentation(split, split="train"))
    image = split / "VOCdevkit" / "VOC2012" / "JPEGImages" / "b.jpg"
    Image.new("RGB", (5, 4)).save(image)  # replaced by an image of another size: the cached counts no longer hold
    with pytest.raises(DataError, match=r"b.png: mask is 4x4 but its image b.jpg is 5x4 \(WxH\)$"):
        class_pixel_counts(VOCSegmentation(split, split="train"))


def test_read_only_folder_is_counted_without_cache(split, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(split), "write_text", refuse)
    dataset = VOCSegmentation(split, split="train")
    assert class_pixel_counts(dataset).tolist() == [[22, 3, 0, 0], [0, 0, 16, 0]]
    assert not class_pixels_cache(dataset).exists()


def test_a_ctrl_c_while_caching_leaves_no_file_in_the_data_folder(split, monkeypatch):
    before = sorted(split.iterdir())

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        class_pixel_counts(VOCSegmentation(split, split="train"))
    assert sorted(split.iterdir()) == before
