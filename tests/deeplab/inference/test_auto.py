"""``auto`` on the CPU is a verified choice: the first candidate whose classes keep the fp32 model's on the
checkpoint's validation images, else exact fp32 (and why); the decision is cached, reused without verifying
again, and redone when its record is damaged."""
from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import read_rgb, save_label_png
from deeplab import save_checkpoint
from deeplab.errors import UserError
from deeplab.inference import auto
from deeplab.inference.auto import choose_auto, verification_images
from deeplab.inference.cache import EngineCache, file_sha256
from deeplab.inference.calibration import NAMED, Calibration
from deeplab.inference.predictor import prepare_image


@pytest.fixture
def checkpoint(tmp_path: Path, make_checkpoint, make_voc_folder):
    """A checkpoint whose run arguments name a 3-image validation split on disk, and its model (several classes)."""
    model = make_checkpoint(tmp_path / "m.pt", num_classes=3, varied=True)
    masks = {f"v{i}": np.random.default_rng(i).integers(0, 3, (40, 52), dtype=np.uint8) for i in range(3)}
    make_voc_folder(tmp_path / "data", masks, split="val")
    save_checkpoint({"model": model.state_dict(), "model_config": model.config,
                     "args": {"data_root": str(tmp_path / "data"), "split": "train", "val_split": "val"}},
                    tmp_path / "m.pt")
    return tmp_path / "m.pt", model


def choose(path: Path, model, build, **kwargs) -> auto.AutoChoice:
    """choose_auto as the Predictor calls it, with ``build`` standing in for the engine cache."""
    sha256 = file_sha256(path)
    return choose_auto(EngineCache(path, sha256, user_dir=path.parent / "user"), sha256,
                       ckpt=torch.load(path, weights_only=True), build=build, reference=lambda: model,
                       calibration=kwargs.pop("calibration", None),
                       prepare=functools.partial(prepare_image, mean=model.mean, std=model.std, max_size=None),
                       max_size=None, **kwargs)


class Engines:
    """Candidate engines by name, counting how often each is built."""

    def __init__(self, **engines) -> None:
        self.engines, self.built = engines, []

    def __call__(self, name: str):
        self.built.append(name)
        return self.engines[name]


def flipped(model):
    """An engine that moves every pixel to the next class: it never agrees with fp32."""
    return lambda batch: model(batch).roll(1, dims=1)


@pytest.fixture
def candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two candidates run here whatever this CPU has: a faster int8 one, then a bf16 one."""
    monkeypatch.setattr(auto, "_candidates", lambda flags, int8: ["openvino-int8", "openvino-bf16"])


def test_first_agreeing_candidate_is_chosen_after_one_that_disagrees(checkpoint, candidates) -> None:
    path, model = checkpoint
    engines = Engines(**{"openvino-int8": flipped(model), "openvino-bf16": model})
    choice = choose(path, model, engines)
    assert choice.engine == "openvino-bf16" and choice.run is model
    assert engines.built == ["openvino-int8", "openvino-bf16"]
    assert choice.line.startswith("engine auto -> openvino-bf16 (100.00% of 3 validation images' pixels agree")
    assert "faster ones fell short: openvino-int8 " in choice.line and choice.line.endswith("checked now and cached)")


def test_no_agreeing_candidate_falls_back_to_exact_fp32(checkpoint, candidates) -> None:
    path, model = checkpoint
    choice = choose(path, model, Engines(**{"openvino-int8": flipped(model), "openvino-bf16": flipped(model)}))
    assert choice.engine == "onnxruntime" and choice.run is None
    assert choice.reason.startswith("exact fp32: no faster engine kept >= 99.50% of 3 validation images' pixels")


def test_the_choice_is_cached_and_reused_without_verifying(checkpoint, candidates) -> None:
    path, model = checkpoint
    first = choose(path, model, Engines(**{"openvino-int8": flipped(model), "openvino-bf16": model}))
    records = list((path.parent / "m.engines").glob("auto-*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["engine"] == "openvino-bf16"

    def never():
        raise AssertionError("the fp32 model was rebuilt to verify again")

    engines = Engines()
    again = choose_auto(EngineCache(path, file_sha256(path)), file_sha256(path), ckpt=torch.load(path),
                        build=engines, reference=never, calibration=None, prepare=None, max_size=None)
    assert engines.built == [] and again.engine == first.engine and again.run is None
    assert again.line.endswith("checked once, cached)")


def test_changed_validation_images_are_checked_again(checkpoint, candidates) -> None:
    path, model = checkpoint
    choose(path, model, Engines(**{"openvino-int8": model}))
    image = next((path.parent / "data").rglob("v1.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")  # same pixels, other bytes: another set of images
    engines = Engines(**{"openvino-int8": model})
    assert choose(path, model, engines).engine == "openvino-int8" and engines.built == ["openvino-int8"]
    assert len(list((path.parent / "m.engines").glob("auto-*.json"))) == 2


def test_corrupt_record_is_redone(checkpoint, candidates, capsys) -> None:
    path, model = checkpoint
    choose(path, model, Engines(**{"openvino-int8": model}))
    record = next((path.parent / "m.engines").glob("auto-*.json"))
    for damage in ("{not json", json.dumps({"engine": "torch", "checks": []})):
        record.write_text(damage)
        engines = Engines(**{"openvino-int8": model})
        assert choose(path, model, engines).engine == "openvino-int8" and engines.built == ["openvino-int8"]
        assert "warning" in capsys.readouterr().err
        assert json.loads(record.read_text())["engine"] == "openvino-int8"


def test_a_candidate_that_fails_to_build_is_skipped(checkpoint, candidates, capsys) -> None:
    path, model = checkpoint

    def broken(batch):
        raise RuntimeError("unsupported operation\nin this runtime")

    choice = choose(path, model, Engines(**{"openvino-int8": broken, "openvino-bf16": model}))
    assert choice.engine == "openvino-bf16" and "openvino-int8 failed" in choice.line
    assert "warning: auto: skipped openvino-int8: unsupported operation in this runtime" in capsys.readouterr().err


def test_nan_scores_are_never_taken_for_agreement(checkpoint, candidates) -> None:
    """NaN scores argmax to class 0 everywhere, which a finite engine predicting class 0 would match."""
    path, model = checkpoint

    def nan(batch):
        return model(batch) * float("nan")

    broken = copy.deepcopy(model)  # diverged BatchNorm statistics
    next(m for m in broken.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(-1.0)
    with pytest.raises(UserError, match="NaN or infinite"):
        choose(path, broken, Engines(**{"openvino-int8": model}))
    choice = choose(path, model, Engines(**{"openvino-int8": nan, "openvino-bf16": model}))
    assert choice.engine == "openvino-bf16" and "openvino-int8 failed" in choice.line


def test_no_validation_data_stays_exact_and_says_why(checkpoint, candidates, tmp_path: Path) -> None:
    path, model = checkpoint
    bare = tmp_path / "bare.pt"
    save_checkpoint({"model": model.state_dict(), "model_config": model.config}, bare)
    choice = choose(bare, model, Engines())
    assert choice.engine == "onnxruntime"
    assert choice.reason == ("exact fp32: no validation images to check a faster engine on; the checkpoint names no "
                             "validation data (not written by train.py here)")
    (tmp_path / "data").rename(tmp_path / "moved")
    assert f"its validation split 'val' under {tmp_path / 'data'} is not on this machine" in choose(
        path, model, Engines()).reason
    assert not list(tmp_path.rglob("auto-*.json"))  # nothing was decided, so nothing is cached


def test_validation_images_of_any_type_are_found(checkpoint, tmp_path: Path) -> None:
    images = tmp_path / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    (images / "v1.jpg").rename(images / "v1.png")
    found = verification_images(torch.load(checkpoint[0], weights_only=True), None)
    assert found.kind == "validation" and [p.name for p in found.images] == ["v0.jpg", "v1.png", "v2.jpg"]


def test_validation_masks_in_a_labelmaps_colours_are_read_as_its_class_ids(tmp_path: Path, make_cvat_folder) -> None:
    masks = {f"v{i}": np.random.default_rng(i).integers(0, 3, (40, 52), dtype=np.uint8) for i in range(2)}
    make_cvat_folder(tmp_path / "data", masks, split="val")
    found = verification_images({"args": {"data_root": str(tmp_path / "data"), "val_split": "val"}}, None)
    samples = found.load(lambda rgb: torch.tensor(rgb).permute(2, 0, 1)[None].float(), 3)
    assert [mask[0].tolist() for _, mask in samples] == [mask.tolist() for mask in masks.values()]


def test_named_calibration_images_stand_in_for_a_missing_validation_split(checkpoint, tmp_path: Path) -> None:
    path, _ = checkpoint
    named = Calibration(tuple(sorted((tmp_path / "data").rglob("*.jpg"))), NAMED)
    ckpt = torch.load(path, weights_only=True)
    assert verification_images(ckpt, named).kind == "validation"  # the split wins while it is here
    (tmp_path / "data").rename(tmp_path / "moved")
    moved = Calibration(tuple(sorted((tmp_path / "moved").rglob("*.jpg"))), NAMED)
    found = verification_images(ckpt, moved)
    assert found.kind == "--calibration" and found.images == moved.paths and found.masks == (None,) * 3
    assert isinstance(verification_images(ckpt, Calibration(moved.paths, "the images to predict")), str)


class ByBrightness(torch.nn.Module):
    """A stand-in model whose class is the red level // 100 (of 0..255): its masks can be written exactly."""

    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        classes = (batch[:, 0] * 255 // 100).long().clamp(0, 2)
        return torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()


def test_a_candidate_that_loses_a_rare_class_is_refused_despite_agreeing(tmp_path: Path, make_voc_folder,
                                                                         candidates) -> None:
    """Over 99.5% of pixels agree, but the rare class is gone: far more than 0.5 mIoU points lost."""
    base = make_voc_folder(tmp_path / "data", {"a": np.zeros((64, 64), np.uint8)}, split="val")
    image = np.full((64, 64, 3), 40, np.uint8)
    image[:, 32:] = 130
    image[10:14, 10:14] = 250  # a few pixels of class 2
    Image.fromarray(image).save(base / "JPEGImages" / "a.jpg", quality=100)
    model = ByBrightness()
    truth = model(prepare_image(read_rgb(base / "JPEGImages" / "a.jpg"), mean=model.mean, std=model.std,
                                max_size=None)).argmax(1)
    save_label_png(base / "SegmentationClass" / "a.png", truth[0].numpy().astype(np.uint8))
    assert 0 < int((truth == 2).sum()) < 0.005 * truth.numel()

    def without_class_2(batch: torch.Tensor) -> torch.Tensor:
        logits = model(batch)
        logits[:, 2] = 0
        return logits

    save_checkpoint({"model": {}, "model_config": {"num_classes": 3},
                     "args": {"data_root": str(tmp_path / "data"), "val_split": "val"}}, tmp_path / "m.pt")
    choice = choose(tmp_path / "m.pt", model, Engines(**{"openvino-int8": without_class_2, "openvino-bf16": model}))
    assert choice.engine == "openvino-bf16"
    assert re.search(r"fell short: openvino-int8 99\.[5-9]\d% but mIoU -3\d\.\d\d points;", choice.line), choice.line
