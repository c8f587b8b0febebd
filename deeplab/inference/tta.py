"""Test-time augmentation: class scores averaged over rescaled, mirrored or turned copies of a batch."""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError

__all__ = ["Engine", "ScoresNotFinite", "View", "check_engine", "class_scores", "predict_probabilities",
           "require_finite", "tta_views"]

#: A prepared model: normalised ``(N, 3, H, W)`` float batch -> ``(N, C, H, W)`` float32 logits.
Engine = Callable[[torch.Tensor], torch.Tensor]


def check_engine(engine: Engine) -> None:
    """ValueError for a model given as an engine that cannot predict: one in training mode, whose masks change from
    call to call and whose BatchNorm running statistics each call updates, or one whose weights are not float32."""
    if not isinstance(engine, torch.nn.Module):
        return
    if engine.training:
        raise ValueError("engine: a model in training mode, whose masks would change from call to call (dropout, "
                         "BatchNorm on each batch's statistics, updating its running ones); pass model.eval() or "
                         "deeplab.inference.create_engine(model)")
    dtype = next((p.dtype for p in engine.parameters() if p.is_floating_point()), None)
    if dtype not in (None, torch.float32):  # images arrive as float32: a conv of other weights fails on the first
        raise ValueError(f"engine: a model with {dtype} weights, but images arrive as float32; pass model.float() "
                         "(create_engine(model.float(), engine='torch-bf16') runs it in bfloat16 where the CPU "
                         "has it)")


def predict_probabilities(
    engine: Engine, images: torch.Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = False,
    any_orientation: bool = False, min_side: int = 1
) -> torch.Tensor:
    """Class probabilities ``(N, C, H, W)`` averaged over rescaled copies of ``images``, each also mirrored left-right
    with ``flip``, or in all eight mirrors and quarter turns with ``any_orientation``; a scale that leaves a side
    under ``min_side`` pixels (the model's smallest input) is a UserError."""
    if not scales or not all(math.isfinite(scale) and scale > 0 for scale in scales):  # no average, or no image
        raise UserError(f"--scales {','.join(map(str, scales)) or '(none)'}: expected one or more positive numbers, "
                        "e.g. 0.75,1.0,1.25")
    size = images.shape[-2:]
    views = tta_views(flip=flip, any_orientation=any_orientation)
    total = None
    for scale in scales:
        scaled_size = [math.floor(side * scale) for side in size]
        if min(scaled_size) < min_side:
            needs = "" if min_side == 1 else f", under the {min_side} a side this model needs"
            raise UserError(f"--scales {scale:g}: shrinks a {size[1]}x{size[0]} image to {scaled_size[1]}x"
                            f"{scaled_size[0]} pixels (WxH){needs}; use larger scales")
        # By size: with scale_factor, the floor(side * scale) pixels would sample only floor(side * scale) / scale
        # of a side the scale does not divide, and the logits scaled back to the full side would sit up to a pixel off.
        scaled = images if scale == 1.0 else F.interpolate(images, size=scaled_size, mode="bilinear",
                                                           align_corners=False)
        for view in views:
            logits = view.undo(engine(view.apply(scaled)).float())
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
    return total / (len(scales) * len(views))


@dataclasses.dataclass(frozen=True)
class View:
    """One orientation of a batch: transposed (rows for columns), then mirrored left-right, then top-bottom."""

    transpose: bool = False
    mirror: bool = False
    upside_down: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (``..., H, W``) seen in this orientation."""
        x = x.transpose(-2, -1) if self.transpose else x
        x = x.flip(-1) if self.mirror else x
        return x.flip(-2) if self.upside_down else x

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`apply`: scores of the oriented view back in the image's own orientation."""
        x = x.flip(-2) if self.upside_down else x
        x = x.flip(-1) if self.mirror else x
        return x.transpose(-2, -1) if self.transpose else x


def tta_views(*, flip: bool = False, any_orientation: bool = False) -> list[View]:
    """The views averaged: the image alone, with ``flip`` also its mirror, with ``any_orientation`` all eight
    mirrors and quarter turns (the square's symmetries; the left-right mirror among them)."""
    if any_orientation:
        return [View(*choice) for choice in itertools.product((False, True), repeat=3)]
    return [View(), View(mirror=True)] if flip else [View()]


def class_scores(engine: Engine, images: torch.Tensor, *, scales: Sequence[float] = (1.0,),
                 flip: bool = False, any_orientation: bool = False, min_side: int = 1) -> torch.Tensor:
    """Raw logits for a plain single-scale pass (cheapest), averaged probabilities otherwise; same argmax either way.
    Images with a side under ``min_side`` pixels are a UserError (see :func:`deeplab.checkpoint.min_input_side`), and
    so are NaN or infinite scores, whose argmax would be a mask of class 0 presented as an answer."""
    height, width = images.shape[-2:]
    if min(height, width) < min_side:
        raise UserError(f"a {width}x{height} image: too small for this model, which needs at least {min_side} pixels "
                        "a side")
    if list(scales) == [1.0] and not (flip or any_orientation):
        scores = engine(images)
    else:
        scores = predict_probabilities(engine, images, scales=scales, flip=flip, any_orientation=any_orientation,
                                       min_side=min_side)
    require_finite(scores)
    return scores


class ScoresNotFinite(UserError):
    """The model's class scores hold NaN or infinity: a diverged model, whose argmax would be no answer."""


def require_finite(scores: torch.Tensor) -> None:
    """Raise :class:`ScoresNotFinite` if the model's ``(N, C, H, W)`` class scores hold NaN or infinity."""
    if not torch.isfinite(scores).all():
        height, width = scores.shape[-2:]
        raise ScoresNotFinite(f"the model's class scores on a {width}x{height} input are NaN or infinite: its weights "
                              "or BatchNorm statistics have diverged (a model trained too few steps, or with too high "
                              "a --lr)")
