"""What a supported project declares (:class:`Project`) and the tensor-renaming helpers its converter uses."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["Project", "StateDict", "fold_conv_bias", "rename_keys"]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Project:
    """A published DeepLabV3+ implementation whose checkpoints we convert to our own layout.

    ``owns`` says whether a state dict uses the project's names at all (any of its architectures);
    ``unsupported`` names the architecture when it is one we cannot import (``None`` when we can);
    ``convert`` maps the project's tensors to our names (conv biases folded into BatchNorm) and lists the
    tensors it has no place for.
    """

    name: str
    title: str
    architecture: str
    reported: str
    owns: Callable[[StateDict], bool]
    unsupported: Callable[[StateDict], str | None]
    num_classes: Callable[[StateDict], int]
    model_config: Callable[[int, int], dict[str, Any]]
    convert: Callable[[StateDict], tuple[dict[str, torch.Tensor], list[str]]]


def rename_keys(state: StateDict, rules: Sequence[tuple[str, str]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply the first matching ``(regex, replacement)`` rule to each key; returns the renamed tensors and the
    keys no rule matched (tensors the target architecture has no place for)."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        for pattern, replacement in compiled:
            if pattern.match(key):
                renamed[pattern.sub(replacement, key, count=1)] = tensor
                break
        else:
            unmatched.append(key)
    return renamed, unmatched


def fold_conv_bias(state: dict[str, torch.Tensor], conv: str, bn: str) -> None:
    """Fold the bias of conv ``conv`` into the BatchNorm ``bn`` that follows it, in place and exactly.

    ``bn((w * x + b) - mean) == bn(w * x - (mean - b))``: subtracting the bias from the running mean gives the
    same eval-mode output with a bias-free conv. Missing tensors are left for the shape check to report.
    """
    bias = state.pop(f"{conv}.bias", None)
    mean = state.get(f"{bn}.running_mean")
    if bias is None or mean is None or bias.shape != mean.shape:
        if bias is not None:
            state[f"{conv}.bias"] = bias
        return
    state[f"{bn}.running_mean"] = mean - bias
