"""The training loop: guarded optimizer steps, periodic validation, resumable checkpoints, metrics log.

Library functions take explicit keyword arguments (never an argparse namespace). Whether this process writes
files or shows progress is decided by :func:`~deeplab.engine.distributed.is_main_process` alone.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..checkpoint import min_input_side, save_checkpoint
from ..errors import UserError, raise_if_interrupted
from ..evaluation import evaluate
from .distributed import all_reduce_confusion_matrix, get_world_size, is_main_process, mean_over_ranks, unwrap_model
from .losses import segmentation_loss
from .metrics_log import MetricsLog, plot_curves
from .state import training_state
from .tensorboard import TensorBoardLog

__all__ = [
    "AMP_MODES", "VALIDATION_LOG_KEYS", "LossNotFinite", "RunFileNotWritten", "TrainResult", "resolve_amp", "train",
    "train_step", "validate",
]

AMP_MODES = ("auto", "off", "bf16", "fp16")
#: The scores each validation adds to its line of ``metrics.jsonl`` (the checkpoint holds them all).
VALIDATION_LOG_KEYS = ("miou", "pixel_acc", "mean_acc", "fw_iou", "mean_dice", "per_class_iou")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` in ``AMP_MODES``; mixed precision is CUDA-only (bf16 where supported)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise UserError(f"--amp {amp}: mixed precision needs a CUDA device, not {device}")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    amp_dtype: torch.dtype | None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = segmentation_loss,
) -> float:
    """One optimizer step on ``criterion(logits, masks)``; returns the loss, or NaN/inf *before* touching the
    weights when it is not finite."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = criterion(model(images), masks)
    value = mean_over_ranks(loss.detach()).item()  # every rank sees a non-finite loss on any rank and stops
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    scheduler.step()
    return value


@contextlib.contextmanager
def _scheduler_order_quiet() -> Iterator[None]:
    """Silence torch's warning that ``lr_scheduler.step()`` ran before ``optimizer.step()``: the scaler skips the
    steps whose fp16 gradients overflow, as it should, and the schedule still follows the step count. Entered once
    for the loop, not per step: each entry resets every module's once-only warning registry."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        yield


def validate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    class_names: Sequence[str],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Scores (miou, pixel_acc, per_class_iou) of ``model`` over the whole validation loader (all ranks' shards)."""
    core = unwrap_model(model)  # no DDP forward: ranks' shards may differ in length

    def predictor(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return core(images.to(device)).float()

    model.eval()
    try:
        matrix = evaluate(predictor, loader, num_classes=len(class_names), min_side=min_input_side(core.config))
    finally:
        model.train()
    return all_reduce_confusion_matrix(matrix).scores(class_names)


class LossNotFinite(UserError):
    """The loss went NaN or infinite at ``step``; that step never reached the weights (the caller adds which
    checkpoint is the last good one)."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training stopped at step {step}: the loss is {loss} "
                         "(try a lower --lr or a longer --warmup-iters)")


class RunFileNotWritten(UserError):
    """A file of the run (checkpoint, log, plot) could not be written, e.g. on a full disk; the caller adds which
    checkpoint is the last good one."""


@contextlib.contextmanager
def _writing_run_files() -> Iterator[None]:
    """Raise a failed write of a run file as :class:`RunFileNotWritten`."""
    try:
        yield
    except RunFileNotWritten:
        raise
    except UserError as exc:
        raise RunFileNotWritten(str(exc)) from None


@dataclass
class TrainResult:
    """What a finished run did: steps done, wall time, best and last validation scores, where files are."""

    steps: int
    seconds: float
    best_miou: float
    last_scores: dict[str, Any] | None
    out_dir: Path


def train(
    model: nn.Module,
    *,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    total_steps: int,
    val_every: int,
    out_dir: str | Path,
    class_names: Sequence[str],
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    start_step: int = 0,
    start_sample: int = 0,
    best_miou: float = -1.0,
    run_args: dict[str, Any] | None = None,
    progress: bool = True,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = segmentation_loss,
    tensorboard: bool = False,
    history: str | Path | None = None,
) -> TrainResult:
    """Train from ``start_step`` to ``total_steps`` on ``criterion``, validating (and saving ``last.pt``, and
    ``best.pt`` on a new best mIoU) every ``val_every`` steps and at the end; ``metrics.jsonl`` and ``curves.png``
    follow along, and with ``tensorboard`` also event files in ``out_dir/tensorboard``. ``history`` is the resumed
    run's ``metrics.jsonl``: its records up to ``start_step`` begin this run's log. ``start_sample``: the samples of
    the training stream consumed before ``start_step``, saved on with the checkpoints.

    A non-finite loss stops the run with a UserError before the poisoned step reaches the weights or a file.
    """
    out_dir = Path(out_dir)
    main = is_main_process()
    log = MetricsLog(out_dir / "metrics.jsonl")
    board = TensorBoardLog(out_dir / "tensorboard", start_step=start_step) if tensorboard and main else None
    if main:
        # A resumed run rewrites whatever followed its checkpoint; in a new folder its log and plot still start at 0.
        log.reset(keep_until=start_step, history=MetricsLog(history) if history is not None else None)
    model.to(device).train()
    save = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "class_names": class_names,
            "run_args": run_args or {}}
    batches = iter(train_loader)
    bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not (progress and main))
    step, scores, images_seen, started = start_step, None, 0, time.perf_counter()
    with bar, board if board is not None else contextlib.nullcontext(), _scheduler_order_quiet():
        while step < total_steps:
            raise_if_interrupted()
            images, masks = next(batches)
            lr = optimizer.param_groups[-1]["lr"]  # the head's rate: unscaled by --backbone-lr-scale
            loss = train_step(model, images.to(device, non_blocking=True), masks.to(device, non_blocking=True),
                              optimizer=optimizer, scheduler=scheduler, scaler=scaler, amp_dtype=amp_dtype,
                              criterion=criterion)
            step += 1
            if not math.isfinite(loss):
                raise LossNotFinite(step, loss)
            images_seen += images.shape[0] * get_world_size()
            images_per_s = images_seen / (time.perf_counter() - started)
            record = {"step": step, "loss": round(loss, 6), "lr": lr}
            if board is not None:
                board.training(step, loss=loss, lr=lr, images_per_s=images_per_s)
            if step % val_every == 0 or step == total_steps:
                scores = validate(model, val_loader, class_names=class_names, device=device, amp_dtype=amp_dtype)
                best_miou = _save_validation(model, log, record, scores, step=step,
                                             samples=start_sample + images_seen, best_miou=best_miou,
                                             out_dir=out_dir, main=main, save=save)
                if board is not None:
                    board.validation(step, scores, model=unwrap_model(model), loader=val_loader,
                                     class_names=class_names, device=device)
            elif main:
                with _writing_run_files():
                    log.append(record)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}", refresh=False)
            bar.update(1)
    return TrainResult(steps=step, seconds=time.perf_counter() - started, best_miou=best_miou,
                       last_scores=scores, out_dir=out_dir)


def _save_validation(
    model: nn.Module,
    log: MetricsLog,
    record: dict[str, Any],
    scores: dict[str, Any],
    *,
    step: int,
    samples: int,
    best_miou: float,
    out_dir: Path,
    main: bool,
    save: dict[str, Any],
) -> float:
    """Log a validation step, then save best.pt (on a new best) and last.pt; returns the new best mIoU.

    The log line goes first: a crash between the two leaves a logged step past the checkpoint, which the
    resume truncates, never a checkpointed step missing from the log.
    """
    improved = scores["miou"] > best_miou
    best_miou = max(best_miou, scores["miou"])
    if not main:
        return best_miou
    state = training_state(model, step=step, samples=samples, best_miou=best_miou, scores=scores, **save)
    with _writing_run_files():
        log.append({**record, **{key: scores[key] for key in VALIDATION_LOG_KEYS}})
        if improved:
            save_checkpoint(state, out_dir / "best.pt")
        save_checkpoint(state, out_dir / "last.pt")
        plot_curves(log.read(), out_dir / "curves.png")
    return best_miou
