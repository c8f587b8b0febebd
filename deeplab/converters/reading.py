"""Read another project's checkpoint file without running its code, and find the state dict inside it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from backbones.base import without_wrapper_prefixes

from ..checkpoint import is_safetensors, is_state_dict, read_checkpoint_bytes, read_plain_data
from ..errors import UserError, one_line

__all__ = ["find_state_dict", "read_foreign_checkpoint"]

# Keys under which training scripts store the model's weights beside optimizer state, epochs and scores
# (``model_state_dict``: PyTorch's own tutorial on saving a checkpoint).
STATE_DICT_KEYS = ("model_state", "model_state_dict", "state_dict", "model", "net")


def _numpy_scalar_globals() -> list[Any]:
    """What unpickling a numeric numpy scalar needs (scores such as ``best_score = np.float64(0.711)``).

    Reconstructing a scalar from a numeric dtype and its raw bytes runs no code; object dtypes stay refused.
    """
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    # Files written under numpy 1 name the function numpy.core..., under numpy 2 numpy._core...
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *dtypes]


def read_foreign_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with numeric numpy scalars allowed, or the tensors of a safetensors
    file (the Hugging Face hub's format, whatever its name ends in); every failure is one line."""
    data = read_checkpoint_bytes(path)
    if is_safetensors(data):
        from safetensors.torch import load  # deferred: only these files need it (installed with timm)

        try:
            return load(data)
        except Exception as exc:  # a cut or damaged file: safetensors' own reason
            raise UserError(f"{path}: not a readable safetensors file ({one_line(exc)})") from None
    return read_plain_data(path, allowed_globals=_numpy_scalar_globals(), data=data)


def find_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the model in a loaded checkpoint: the object itself or the first state dict under a usual
    key, with a ``module.`` prefix (saved from DataParallel) removed."""
    candidates = [obj] + [obj.get(key) for key in STATE_DICT_KEYS] if isinstance(obj, dict) else [obj]
    state = next((c for c in candidates if is_state_dict(c)), None)
    if state is None:
        raise UserError(f"{path}: no model weights found (expected a state dict of tensors, alone or under one of "
                        f"the keys {', '.join(STATE_DICT_KEYS)})")
    return without_wrapper_prefixes(state)

