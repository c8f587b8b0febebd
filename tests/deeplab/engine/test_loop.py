"""The training loop's guards: mixed precision is CUDA-only."""
from __future__ import annotations

import pytest
import torch

from deeplab.engine.loop import resolve_amp
from deeplab.errors import UserError


def test_amp_is_cuda_only():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    with pytest.raises(UserError, match="CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", cpu)
