"""The training loop's guards: mixed precision is CUDA-only; validation images the model cannot take are one line."""
from __future__ import annotations

import pytest
import torch

from deeplab import build_model
from deeplab.engine.loop import resolve_amp, validate
from deeplab.errors import UserError


def test_amp_is_cuda_only():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    with pytest.raises(UserError, match="CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", cpu)


def test_a_validation_image_too_small_for_the_model_is_one_line():
    """A VainF import (unpadded 3x3 stem) fine-tuned on data holding a 2-pixel-high image."""
    model = build_model(num_classes=2, width_mult=0.25, pad_block_input=True)
    loader = [(torch.zeros(1, 3, 2, 40), torch.zeros(1, 2, 40, dtype=torch.long))]
    with pytest.raises(UserError, match="a 40x2 image: too small for this model, which needs at least 3 pixels"):
        validate(model, loader, class_names=["a", "b"], device=torch.device("cpu"))
