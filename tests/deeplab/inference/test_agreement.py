"""Engines keep a trained model's answer: on a small model trained on the demo data (random weights predict one
class everywhere, which any engine reproduces), each engine's classes match fp32 eager on most validation pixels,
and the engine ``auto`` picks keeps at least the 99.5% it promises."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datasets import VOCSegmentation, build_eval_transform
from deeplab.inference import create_engine, resolve_engine
from deeplab.inference.engines import SPECS
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
