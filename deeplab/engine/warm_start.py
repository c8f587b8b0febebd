"""Start a new run from another checkpoint's weights (ours or an imported one): every tensor whose name and shape
match is loaded; the rest keep their fresh initialisation (e.g. a classifier for another number of classes, or for
classes the checkpoint names otherwise)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import torch
from torch import nn

from backbones.base import without_wrapper_prefixes

from ..checkpoint import load_checkpoint
from ..errors import UserError

__all__ = ["WarmStart", "init_checkpoint_defaults", "load_init_weights", "load_matching", "read_init_checkpoint"]

_CLASSIFIER = "decoder.classifier."


@dataclass(frozen=True)
class WarmStart:
    """What :func:`load_matching` did: tensors loaded, kept fresh because their shape differs or they score other
    classes, or absent."""

    loaded: list[str]
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    missing: list[str]
    unused: list[str]
    other_classes: list[str] = dataclasses.field(default_factory=list)

    def summary(self, source: str | Path) -> list[str]:
        """One line of counts, then one per tensor left at its fresh initialisation (and the unused ones)."""
        total = len(self.loaded) + len(self.reshaped) + len(self.missing) + len(self.other_classes)
        lines = [f"initialised from {source}: loaded {len(self.loaded)} of {total} tensors"]
        lines += [f"  not loaded, shape {list(theirs)} in the checkpoint, {list(ours)} here (re-initialised): {name}"
                  for name, theirs, ours in self.reshaped]
        lines += [f"  not loaded, the checkpoint's class names are not the data's (re-initialised; "
                  f"--ignore-class-names loads it): {name}" for name in self.other_classes]
        lines += [f"  not in the checkpoint (fresh initialisation): {name}" for name in self.missing]
        lines += [f"  in the checkpoint but not in this model (ignored): {name}" for name in self.unused]
        return lines


def read_init_checkpoint(path: str | Path, *, backbone: str) -> dict[str, Any]:
    """The checkpoint to start from, refused when it holds another backbone than the run's; the weights of a
    compiled or DDP-wrapped model lose their wrapper's prefix, as eval and predict read them, instead of matching
    no tensor of the model."""
    ckpt = load_checkpoint(path)
    saved = ckpt["model_config"].get("backbone")
    if saved != backbone:
        raise UserError(f"{path}: holds a {saved} model but this run uses --backbone {backbone}; "
                        f"leave --backbone out to train the checkpoint's")
    return {**ckpt, "model": without_wrapper_prefixes(ckpt["model"])}


def init_checkpoint_defaults(path: str | Path) -> dict[str, Any]:
    """The run settings a checkpoint implies when a run starts from it: its backbone and output stride."""
    config = load_checkpoint(path)["model_config"]
    return {key: config[key] for key in ("backbone", "output_stride") if key in config}


def load_init_weights(model: nn.Module, init: Mapping[str, Any], class_names: Sequence[str], *,
                      ignore_class_names: bool = False) -> WarmStart:
    """Load checkpoint ``init``'s matching tensors into ``model``, its classifier only when it records no class names
    or the data's (or ``ignore_class_names``): a same-shaped classifier of other classes would start each class
    from the weights of whichever class held its id."""
    recorded = list(init.get("class_names") or [])
    if not recorded or recorded == list(class_names) or ignore_class_names:
        return load_matching(model, init["model"])
    return load_matching(model, init["model"], other_classes=[n for n in init["model"] if n.startswith(_CLASSIFIER)])


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                  other_classes: Collection[str] = ()) -> WarmStart:
    """Copy into ``model`` each tensor of ``state`` with the same name and shape, except those named in
    ``other_classes``; report the others."""
    own = model.state_dict()
    loaded, reshaped, skipped = [], [], []
    matching = {}
    for name, tensor in state.items():
        if name not in own:
            continue
        if tensor.shape != own[name].shape:
            reshaped.append((name, tuple(tensor.shape), tuple(own[name].shape)))
        elif name in other_classes:
            skipped.append(name)
        else:
            matching[name] = tensor
            loaded.append(name)
    model.load_state_dict(matching, strict=False)
    missing = [name for name in own if name not in state]
    unused = [name for name in state if name not in own]
    return WarmStart(loaded=loaded, reshaped=reshaped, missing=missing, unused=unused, other_classes=skipped)
