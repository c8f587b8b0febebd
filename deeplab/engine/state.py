"""Run state as plain data: RNGs, model, optimizer and schedule in a checkpoint, and back into live objects."""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError, one_line
from .distributed import unwrap_model

__all__ = ["capture_rng_state", "restore_rng_state", "restore_training_state", "seed_everything", "training_state"]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's RNGs, so model initialisation and dropout repeat from run to run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as tensors, lists and numbers (``weights_only`` loads them)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored only on a machine with as many GPUs."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss"]))


def training_state(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    step: int,
    samples: int,
    best_miou: float,
    scores: dict[str, Any] | None,
    class_names: Sequence[str],
    run_args: dict[str, Any],
) -> dict[str, Any]:
    """Checkpoint of plain data: the model under its own names (no DDP ``module.`` prefix) plus all run state
    (``samples``: how far into the training stream it is, which steps alone do not say once the batch changed)."""
    core = unwrap_model(model)
    return {
        "model": core.state_dict(),
        "model_config": dict(core.config),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step,
        "samples": samples,
        "best_miou": best_miou,
        "scores": scores,
        "class_names": list(class_names),
        "mean": list(core.mean),
        "std": list(core.std),
        "rng": capture_rng_state(),
        "args": dict(run_args),
    }


def restore_training_state(
    ckpt: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler | None = None,
    path: str | Path = "checkpoint",
) -> tuple[int, float]:
    """Load a :func:`training_state` checkpoint into live objects and the RNGs; returns ``(step, best_miou)``."""
    # The saved rates, decay and lr belong to the saved settings and schedule; a resume that changes them (--lr,
    # --weight-decay, --backbone-lr-scale, --iters) trains with, and records, this run's.
    rates = [(group["initial_lr"], group["weight_decay"]) for group in optimizer.param_groups]
    try:
        unwrap_model(model).load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scheduler.base_lrs = [base_lr for base_lr, _ in rates]
        for group, (base_lr, decay), factor in zip(optimizer.param_groups, rates, scheduler.lr_lambdas):
            group["initial_lr"], group["weight_decay"] = base_lr, decay
            group["lr"] = base_lr * factor(scheduler.last_epoch)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        return int(ckpt["step"]), float(ckpt["best_miou"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: cannot resume from this checkpoint ({one_line(exc)})") from None
