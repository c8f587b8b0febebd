"""Inference engines: callables mapping a normalised ``(N, 3, H, W)`` float batch to float32 logits."""
from __future__ import annotations

from typing import Callable

import torch

from .model import DeepLabV3Plus

__all__ = ["ENGINES", "create_engine"]

ENGINES = ("torch",)
Engine = Callable[[torch.Tensor], torch.Tensor]


def create_engine(model: DeepLabV3Plus, *, engine: str = "torch", device: str | torch.device = "cpu") -> Engine:
    """Prepare ``model`` for inference on ``device`` with the named engine; returns ``batch -> logits``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    model = model.eval().to(device)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> torch.Tensor:
        return model(batch.to(device)).float()

    return run
