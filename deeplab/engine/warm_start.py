"""Start a new run from another checkpoint's weights (ours or an imported one): every tensor whose name and shape
match is loaded; the rest keep their fresh initialisation (e.g. a classifier for another number of classes)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..errors import UserError

__all__ = ["WarmStart", "init_checkpoint_defaults", "load_matching", "read_init_checkpoint"]


@dataclass(frozen=True)
class WarmStart:
    """What :func:`load_matching` did: tensors loaded, kept fresh because their shape differs, or absent."""

    loaded: list[str]
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    missing: list[str]
    unused: list[str]

    def summary(self, source: str | Path) -> list[str]:
        """One line of counts, then one per tensor left at its fresh initialisation (and the unused ones)."""
        total = len(self.loaded) + len(self.reshaped) + len(self.missing)
        lines = [f"initialised from {source}: loaded {len(self.loaded)} of {total} tensors"]
        lines += [f"  not loaded, shape {list(theirs)} in the checkpoint, {list(ours)} here (re-initialised): {name}"
                  for name, theirs, ours in self.reshaped]
        lines += [f"  not in the checkpoint (fresh initialisation): {name}" for name in self.missing]
        lines += [f"  in the checkpoint but not in this model (ignored): {name}" for name in self.unused]
        return lines


def read_init_checkpoint(path: str | Path, *, backbone: str) -> dict[str, Any]:
    """The checkpoint to start from, refused when it holds another backbone than the run's."""
    ckpt = load_checkpoint(path)
    saved = ckpt["model_config"].get("backbone")
    if saved != backbone:
        raise UserError(f"{path}: holds a {saved} model but this run uses --backbone {backbone}; "
                        f"leave --backbone out to train the checkpoint's")
    return ckpt


def init_checkpoint_defaults(path: str | Path) -> dict[str, Any]:
    """The run settings a checkpoint implies when a run starts from it: its backbone and output stride."""
    config = load_checkpoint(path)["model_config"]
    return {key: config[key] for key in ("backbone", "output_stride") if key in config}


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> WarmStart:
    """Copy into ``model`` each tensor of ``state`` with the same name and shape; report the others."""
    own = model.state_dict()
    loaded, reshaped = [], []
    matching = {}
    for name, tensor in state.items():
        if name not in own:
            continue
        if tensor.shape == own[name].shape:
            matching[name] = tensor
            loaded.append(name)
        else:
            reshaped.append((name, tuple(tensor.shape), tuple(own[name].shape)))
    model.load_state_dict(matching, strict=False)
    missing = [name for name in own if name not in state]
    unused = [name for name in state if name not in own]
    return WarmStart(loaded=loaded, reshaped=reshaped, missing=missing, unused=unused)
