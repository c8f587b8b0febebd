"""Freezing for fine-tuning: BatchNorm statistics (and affine terms), and the backbone's early stages.

Modules and state-dict keys stay unchanged, so checkpoints are interchangeable with unfrozen runs. Freeze
before building the optimizer, which then leaves the frozen parameters out.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["freeze_batchnorm", "freeze_early_stages"]


def _stay_in_eval(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: normalise with the running statistics and never update them, even after ``.train()``."""
    module.training = False


def freeze_early_stages(backbone: nn.Module) -> int:
    """Freeze the backbone's layers up to its stride-4 ``low_level`` tap (weights and BN statistics); returns how
    many parameter tensors were frozen.

    The layers are found by autograd (every parameter the ``low_level`` output depends on), so each backbone is
    covered without a per-family list. Freeze before building the optimizer, which then leaves them out.
    """
    params = [p for p in backbone.parameters() if p.requires_grad]
    was_training = backbone.training
    backbone.eval()  # the probe must not move any BatchNorm statistics
    probe = torch.zeros(1, 3, 64, 64, device=params[0].device)
    grads = torch.autograd.grad(backbone(probe)["low_level"].sum(), params, allow_unused=True)
    backbone.train(was_training)
    early = {id(p) for p, g in zip(params, grads) if g is not None}
    for module in backbone.modules():
        if isinstance(module, _BatchNorm) and id(module.weight) in early:
            module.eval()
            module.register_forward_pre_hook(_stay_in_eval)
    for p in params:
        if id(p) in early:
            p.requires_grad_(False)
    return len(early)


def freeze_batchnorm(model: nn.Module, *, affine: bool = True) -> int:
    """Freeze every BatchNorm of ``model`` (running statistics, and scale/shift when ``affine``); returns how many.

    For fine-tuning with batches too small for reliable statistics. Modules and state-dict keys are unchanged,
    so checkpoints stay interchangeable with unfrozen runs. Freeze before building the optimizer, which then
    leaves the frozen scales and shifts out.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
            module.register_forward_pre_hook(_stay_in_eval)
            if affine and module.affine:
                module.weight.requires_grad_(False)
                module.bias.requires_grad_(False)
            frozen += 1
    return frozen
