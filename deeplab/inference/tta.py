"""Test-time augmentation: class scores averaged over rescaled and mirrored copies of a batch."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError

__all__ = ["Engine", "class_scores", "predict_probabilities"]

#: A prepared model: normalised ``(N, 3, H, W)`` float batch -> ``(N, C, H, W)`` float32 logits.
Engine = Callable[[torch.Tensor], torch.Tensor]


def predict_probabilities(
    engine: Engine, images: torch.Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """Class probabilities ``(N, C, H, W)`` averaged over rescaled (and mirrored) copies of ``images``."""
    size = images.shape[-2:]
    total = None
    for scale in scales:
        scaled_size = [math.floor(side * scale) for side in size]  # what interpolate's scale_factor gives
        if min(scaled_size) < 1:
            raise UserError(f"--scales {scale:g}: shrinks a {size[1]}x{size[0]} image to {scaled_size[1]}x"
                            f"{scaled_size[0]} pixels (WxH); use larger scales")
        scaled = images if scale == 1.0 else F.interpolate(
            images, scale_factor=scale, mode="bilinear", align_corners=False
        )
        views = [(scaled, False)] + ([(scaled.flip(-1), True)] if flip else [])
        for view, mirrored in views:
            logits = engine(view).float()
            logits = logits.flip(-1) if mirrored else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
    return total / (len(scales) * (2 if flip else 1))


def class_scores(engine: Engine, images: torch.Tensor, *, scales: Sequence[float] = (1.0,),
                 flip: bool = False) -> torch.Tensor:
    """Raw logits for a plain single-scale pass (cheapest), averaged probabilities otherwise; same argmax either way."""
    if list(scales) == [1.0] and not flip:
        return engine(images)
    return predict_probabilities(engine, images, scales=scales, flip=flip)
