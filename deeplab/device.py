"""Which device a run uses: one rule for training and inference."""
from __future__ import annotations

import torch

from .errors import UserError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it, or for no device at all (``gpu``), is a
    UserError, not a crash later."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch lists its 20 internal device types, none of them what was meant
        raise UserError(f"--device {name}: not a device; use auto, cpu or cuda (cuda:N for the N-th GPU)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device
