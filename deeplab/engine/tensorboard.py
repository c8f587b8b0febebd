"""Optional TensorBoard logging of a run: training scalars every step, validation scores (per class too) and a
few validation overlays (ground truth beside prediction) at every validation. ``metrics.jsonl`` and
``curves.png`` are written either way; TensorBoard is an extra (``pip install "deeplabv3plus-toolkit[tensorboard]"``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..inference.overlay import overlay

__all__ = ["INSTALL_HINT", "TensorBoardLog", "require_tensorboard"]

INSTALL_HINT = 'pip install "deeplabv3plus-toolkit[tensorboard]" (or pip install tensorboard)'
#: Validation images drawn as overlays at each validation.
OVERLAY_IMAGES = 3
_SUMMARIES = ("miou", "mean_dice", "fw_iou", "mean_acc", "pixel_acc")
_PER_CLASS = ("iou", "dice", "precision", "recall")


def require_tensorboard() -> type:
    """torch's ``SummaryWriter``, or a UserError saying how to install TensorBoard when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"--tensorboard: the tensorboard package is not installed; {INSTALL_HINT}") from None
    return SummaryWriter


class TensorBoardLog:
    """Event files in ``log_dir``; a run resumed at ``start_step`` drops the events logged after it."""

    def __init__(self, log_dir: str | Path, *, start_step: int = 0) -> None:
        writer = require_tensorboard()
        self.writer = writer(str(log_dir), purge_step=start_step + 1 if start_step else None)

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()

    def training(self, step: int, *, loss: float, lr: float, images_per_s: float) -> None:
        """One optimizer step's loss, learning rate and throughput."""
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/images_per_s", images_per_s, step)

    def validation(self, step: int, scores: dict[str, Any], *, model: nn.Module,
                   loader: Iterable[tuple[torch.Tensor, torch.Tensor]], class_names: Sequence[str],
                   device: torch.device) -> None:
        """Summary and per-class scores, and :data:`OVERLAY_IMAGES` overlays from the start of ``loader``."""
        for key in _SUMMARIES:
            self.writer.add_scalar(f"val/{key}", scores[key], step)
        for kind in _PER_CLASS:
            for name, value in scores[f"per_class_{kind}"].items():
                if value is not None:
                    self.writer.add_scalar(f"val_{kind}/{name}", value, step)
        for i, picture in enumerate(validation_overlays(model, loader, class_names=class_names, device=device)):
            self.writer.add_image(f"val_overlay/{i}", picture, step, dataformats="HWC")
        self.writer.flush()


def validation_overlays(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                        class_names: Sequence[str], device: torch.device,
                        count: int = OVERLAY_IMAGES) -> list[np.ndarray]:
    """Up to ``count`` pictures (uint8 HxWx3): the ground truth's overlay beside the prediction's."""
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    pictures: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images, masks in loader:
                preds = model(images.to(device)).argmax(dim=1).cpu()
                for image, mask, pred in zip(images, masks, preds):
                    rgb = ((image * std + mean) * 255.0).clamp(0, 255).byte().permute(1, 2, 0).numpy()
                    truth = mask.numpy().astype(np.uint8)  # void keeps its own palette colour
                    pictures.append(np.concatenate([overlay(rgb, truth, class_names=class_names),
                                                    overlay(rgb, pred.numpy().astype(np.uint8),
                                                            class_names=class_names)], axis=1))
                    if len(pictures) == count:
                        return pictures
    finally:
        model.train(was_training)
    return pictures
