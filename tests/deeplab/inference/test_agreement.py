"""Engines keep a trained model's answer: on a small model trained on the demo data (random weights predict one
class everywhere, which any engine reproduces), each engine's classes match fp32 eager on most validation pixels,
and the engine ``auto`` picks, verified once on the checkpoint's validation images, keeps the 99.5% it promises."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datasets import VOCSegmentation, build_eval_transform, read_rgb
from deeplab import load_checkpoint, save_checkpoint
from deeplab.inference import Predictor, auto, create_engine, prepared, resolve_engine
from deeplab.inference.auto import AUTO_CANDIDATES, VERIFY_IMAGES, verification_images
from deeplab.inference.engines import SPECS, bf16_supported
from deeplab.models import build_model

pytestmark = pytest.mark.slow

#: Least share of validation pixels whose class equals fp32 eager's, by precision.
MIN_AGREEMENT = {"f32": 0.9999, "bf16": 0.99, "int8": 0.95}
AUTO_PROMISE = 0.995


@pytest.fixture(scope="module")
def trained(demo_root) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """A narrow MobileNetV2 DeepLabV3+ trained for a few dozen steps; its validation and calibration images."""
    torch.manual_seed(0)
    model = build_model(num_classes=5, width_mult=0.25)
    transform = build_eval_transform(mean=model.mean, std=model.std)
    train = [VOCSegmentation(demo_root, split="train", transform=transform)[i] for i in range(48)]
    images, masks = torch.stack([x for x, _ in train]), torch.stack([y for _, y in train]).long()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(40):
        pick = torch.randint(0, len(train), (8,))
        loss = F.cross_entropy(model(images[pick]), masks[pick], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    val = VOCSegmentation(demo_root, split="val", transform=transform)
    return model.eval(), [val[i][0][None] for i in range(len(val))], [images[i : i + 1] for i in range(0, 48, 6)]


def available(engine: str) -> bool:
    try:
        resolve_engine(engine)
    except ValueError:
        return False
    return engine != "openvino-int8" or importlib.util.find_spec("nncf") is not None


def agreement(model: nn.Module, engine, images: list[torch.Tensor]) -> float:
    same = total = 0
    with torch.inference_mode():
        for image in images:
            expected = model(image).argmax(1)
            same += int((engine(image).argmax(1) == expected).sum())
            total += expected.numel()
    return same / total


def test_the_trained_model_is_not_trivial(trained) -> None:
    model, images, _ = trained
    with torch.inference_mode():
        predicted = torch.cat([model(image).argmax(1).flatten() for image in images])
    shares = torch.bincount(predicted, minlength=5).float() / predicted.numel()
    assert int((shares > 0.02).sum()) >= 2, f"class shares {shares.tolist()}"


@pytest.mark.parametrize("engine", list(SPECS))
def test_engine_agrees_with_fp32(trained, engine: str) -> None:
    if not available(engine):
        pytest.skip(f"engine {engine} does not run here")
    model, images, calibration = trained
    run = create_engine(model, engine=engine, calibration=calibration if SPECS[engine].calibrated else None)
    share = agreement(model, run, images)
    assert share >= MIN_AGREEMENT[SPECS[engine].precision], f"{engine}: {share:.4%}"
    if engine == resolve_engine("auto"):
        assert share >= AUTO_PROMISE, f"auto = {engine} agrees on {share:.4%} only"


@pytest.fixture(scope="module")
def trained_checkpoint(trained, demo_root, tmp_path_factory) -> Path:
    """The trained model saved as train.py saves it: its run arguments name the demo data and its splits."""
    model = trained[0]
    path = tmp_path_factory.mktemp("trained") / "best.pt"
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "mean": list(model.mean),
                     "std": list(model.std), "args": {"data_root": str(demo_root), "split": "train",
                                                      "val_split": "val"}}, path)
    return path


def test_auto_verifies_its_choice_on_the_validation_images_once(trained, trained_checkpoint, monkeypatch) -> None:
    predictor = Predictor.from_checkpoint(trained_checkpoint, engine="auto", device="cpu")
    assert predictor.engine_choice.startswith(f"engine auto -> {predictor.engine_name} (")
    assert predictor.engine_choice.endswith("checked now and cached)")
    assert predictor.engine_name in (*AUTO_CANDIDATES, resolve_engine("auto"))
    checked = verification_images(load_checkpoint(trained_checkpoint), None)
    assert checked.kind == "validation" and len(checked.images) == VERIFY_IMAGES
    images = [predictor.prepare(read_rgb(path)) for path in checked.images]
    assert agreement(trained[0], predictor.engine, images) >= AUTO_PROMISE

    def no_second_check(*args, **kwargs):
        raise AssertionError("auto verified again although its choice was cached")

    monkeypatch.setattr(auto, "_verify", no_second_check)
    again = Predictor.from_checkpoint(trained_checkpoint, engine="auto", device="cpu")
    assert again.engine_name == predictor.engine_name and again.engine_choice.endswith("checked once, cached)")


def test_auto_refuses_candidates_that_change_the_answer(trained, trained_checkpoint, monkeypatch, tmp_path) -> None:
    """Every reduced precision made to flip classes: auto keeps exact fp32 and names what fell short."""
    build = prepared._prepared

    def flipping(path, sha256, model, engine, **kwargs):
        run = build(path, sha256, model, engine, **kwargs)
        return (lambda batch: run(batch).roll(1, dims=1)) if engine in AUTO_CANDIDATES else run

    monkeypatch.setattr(prepared, "_prepared", flipping)
    monkeypatch.setattr(auto, "_candidates", lambda flags, int8: ["torch-bf16"] if bf16_supported() else ["int8"])
    copy = tmp_path / "best.pt"
    copy.write_bytes(trained_checkpoint.read_bytes())
    predictor = Predictor.from_checkpoint(copy, engine="auto", device="cpu")
    assert predictor.engine_name == resolve_engine("auto")
    assert "exact fp32: no faster engine kept >= 99.50% of 16 validation images' pixels" in predictor.engine_choice
