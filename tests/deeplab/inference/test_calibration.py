"""int8 calibration images: the user's, else the checkpoint's own training images when they are here, else the
inputs; a few spread over the split; their digest follows their bytes and the size they are shrunk to."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DataError
from deeplab.inference.calibration import CALIBRATION_IMAGES, Calibration, checkpoint_images, choose_calibration, spread


def test_spread_takes_evenly_spaced_images_first_and_last_included() -> None:
    paths = [Path(f"{i:03d}.jpg") for i in range(100)]
    picked = spread(paths, 5)
    assert [p.stem for p in picked] == ["000", "025", "050", "074", "099"]
    assert spread(paths[:3], 5) == tuple(paths[:3])
    assert len(spread(paths)) == CALIBRATION_IMAGES


def test_checkpoint_names_its_training_images(tmp_path: Path, make_voc_folder) -> None:
    masks = {f"s{i}": np.zeros((8, 8), np.uint8) for i in range(3)}
    base = make_voc_folder(tmp_path / "data", masks, split="train")
    (base / "JPEGImages" / "s2.jpg").rename(base / "JPEGImages" / "s2.png")  # a folder may mix image types
    ckpt = {"args": {"data_root": str(tmp_path / "data"), "split": "train"}}
    assert [p.name for p in checkpoint_images(ckpt)] == ["s0.jpg", "s1.jpg", "s2.png"]
    assert checkpoint_images({"args": {"data_root": str(tmp_path / "elsewhere"), "split": "train"}}) == ()
    assert checkpoint_images({}) == ()


def test_split_from_a_windows_editor_names_all_its_images(tmp_path: Path, make_voc_folder) -> None:
    masks = {f"s{i}": np.zeros((8, 8), np.uint8) for i in range(3)}
    base = make_voc_folder(tmp_path / "data", masks, split="train")
    (base / "ImageSets" / "Segmentation" / "train.txt").write_bytes(b"\xef\xbb\xbfs0\r\ns1\r\n\r\ns2\r\n")
    ckpt = {"args": {"data_root": str(tmp_path / "data"), "split": "train"}}
    assert [p.name for p in checkpoint_images(ckpt)] == ["s0.jpg", "s1.jpg", "s2.jpg"]


def test_choice_order_named_then_checkpoint_then_inputs(tmp_path: Path, make_voc_folder) -> None:
    make_voc_folder(tmp_path / "data", {"s0": np.zeros((8, 8), np.uint8)}, split="train")
    ckpt = {"args": {"data_root": str(tmp_path / "data"), "split": "train"}}
    named, inputs = [tmp_path / "named.png"], [tmp_path / "input.png"]
    assert choose_calibration(named, ckpt, inputs).paths == tuple(named)
    chosen = choose_calibration(None, ckpt, inputs)
    assert [p.name for p in chosen.paths] == ["s0.jpg"] and "training data" in chosen.source
    assert choose_calibration(None, {}, inputs).paths == tuple(inputs)
    assert choose_calibration(None, {}, ()) is None


def test_digest_follows_bytes_and_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    calibration = Calibration((path,), "test")
    first = calibration.digest(None)
    assert calibration.digest(None) == first and calibration.digest(2) != first  # a limit that shrinks them
    assert calibration.digest(512) == first  # one that does not: the same inputs, so the same digest
    Image.fromarray(np.ones((4, 4, 3), np.uint8)).save(path)
    assert calibration.digest(None) != first


def test_batches_skip_unreadable_images_and_need_one(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(good)
    bad.write_text("not an image")
    prepare = lambda image: torch.tensor(image).permute(2, 0, 1)[None].float()  # noqa: E731
    assert [tuple(b.shape) for b in Calibration((bad, good), "test").batches(prepare)] == [(1, 3, 4, 6)]
    with pytest.raises(DataError, match=f"none of the calibration images from test can be read and fit the model "
                                        f"\\({bad}: "):  # says why, naming the file
        Calibration((bad,), "test").batches(prepare)
