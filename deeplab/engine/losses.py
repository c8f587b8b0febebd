"""Training losses over labelled pixels; void (the ignore index) never counts."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from datasets.image_files import IGNORE_INDEX

__all__ = ["segmentation_loss"]


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels; a batch with none gives 0, not NaN (void is not divergence)."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp(min=1)
