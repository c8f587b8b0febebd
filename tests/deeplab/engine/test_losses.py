"""Training losses: void pixels never count, a batch without labels gives 0, not NaN."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplab.engine.losses import segmentation_loss


def test_segmentation_loss_ignores_void_and_is_zero_without_labels():
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    expected = nn.functional.cross_entropy(logits, masks)
    assert segmentation_loss(logits, masks) == pytest.approx(expected.item(), rel=1e-5)
    masks[0] = 255
    assert segmentation_loss(logits, masks) == pytest.approx(
        nn.functional.cross_entropy(logits[1:], masks[1:]).item(), rel=1e-5)
    assert segmentation_loss(logits, torch.full_like(masks, 255)).item() == 0.0
