"""DeepLab optimisation recipe: SGD with momentum, no weight decay on BN/bias, poly decay after a linear warm-up."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "default_warmup_steps", "lr_factor"]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    backbone_lr_scale: float = 1.0,
) -> torch.optim.SGD:
    """SGD over four parameter groups: backbone/head x decayed/not, so BN and biases skip weight decay.

    The backbone's groups run at ``lr * backbone_lr_scale`` (pretrained features often want a smaller step).
    Empty groups are kept so the group layout, and thus a saved optimizer state, never depends on the model.
    """
    groups = {(part, decay): [] for part in ("backbone", "head") for decay in (True, False)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            part = "backbone" if name.startswith("backbone.") else "head"
            # 1-D tensors are BN/GroupNorm scales and shifts or biases: decaying them only hurts.
            groups[(part, param.ndim > 1)].append(param)
    return torch.optim.SGD(
        [
            {
                "params": params,
                "name": f"{part}{'' if decay else '_no_decay'}",
                "lr": lr * (backbone_lr_scale if part == "backbone" else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
            }
            for (part, decay), params in groups.items()
        ],
        lr=lr,
        momentum=momentum,
    )


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, power: float = 0.9) -> float:
    """Multiplier of the base rate for optimizer step ``step`` (0-based): linear warm-up times poly decay."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warmup * max(0.0, 1.0 - step / total_steps) ** power


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step scheduler following :func:`lr_factor`; its state dict is plain data (the rule is rebuilt)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total_steps, warmup_steps=warmup_steps, power=power)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def default_warmup_steps(total_steps: int) -> int:
    """A short warm-up: 5% of the run, at most 500 steps (the first steps' gradients are the wildest)."""
    return min(500, total_steps // 20)
