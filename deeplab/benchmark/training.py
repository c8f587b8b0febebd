"""Training section: our training step against smp's DeepLabV3Plus, and our data pipeline against the step."""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from datasets import VOCSegmentation, build_train_transform

from ..engine.data import build_train_loader
from ..engine.losses import segmentation_loss
from ..models import build_model
from .measure import smp_model

__all__ = ["loader_images_per_second", "step_seconds", "train_step_rates"]

OURS, SMP = "ours (mobilenetv2, OS16)", "smp DeepLabV3Plus(mobilenet_v2)"


def step_seconds(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, steps: int) -> float:
    """Mean wall time of one forward + backward + SGD step (after one untimed warm-up step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()
        loss = segmentation_loss(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def train_step_rates(*, crop_size: int, batch_size: int, steps: int, rounds: int) -> dict[str, float]:
    """Images/s of our and smp's training step on the same random batch, alternating; the best round counts."""
    torch.manual_seed(0)
    models = {OURS: build_model("mobilenetv2", num_classes=21), SMP: smp_model("mobilenet_v2")}
    images = torch.randn(batch_size, 3, crop_size, crop_size)
    masks = torch.randint(0, 21, (batch_size, crop_size, crop_size))
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            best[name] = min(best[name], step_seconds(model, images, masks, steps=steps))
    return {name: batch_size / seconds for name, seconds in best.items()}


def loader_images_per_second(
    dataset: VOCSegmentation, *, mean: Sequence[float], std: Sequence[float], crop_size: int, batch_size: int, workers: int,
    batches: int,
) -> float:
    """Images/s our training loader delivers from ``dataset`` once its workers are up (the first batch is not
    timed)."""
    loader = build_train_loader(
        dataset, transform=build_train_transform(crop_size=crop_size, mean=mean, std=std),
        batch_size=batch_size, workers=workers, seed=0)
    iterator = iter(loader)
    next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)
