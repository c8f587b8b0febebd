"""Training loop for DeepLabV3+: reproducible data order, guarded steps, validation, resumable checkpoints.

Library functions take explicit keyword arguments (never an argparse namespace). Whether this process writes
files or shows progress is decided by :func:`deeplab.distributed.is_main_process` alone.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .distributed import (
    ShardedSampler,
    all_reduce_confusion_matrix,
    get_world_size,
    is_main_process,
    mean_over_ranks,
    shard_dataset,
    unwrap_model,
)
from .errors import UserError, one_line
from .evaluation import evaluate
from .training_log import MetricsLog, plot_curves

__all__ = [
    "IGNORE_INDEX",
    "SeededSampler",
    "TrainResult",
    "build_train_loader",
    "build_val_loader",
    "is_main_process",
    "resolve_amp",
    "restore_training_state",
    "seed_everything",
    "segmentation_loss",
    "train",
    "validate",
]

IGNORE_INDEX = 255
AMP_MODES = ("auto", "off", "bf16", "fp16")


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's RNGs, so model initialisation and dropout repeat from run to run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


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


class SeededSampler(Sampler):
    """Endless stream of ``(index, sample_seed)``: epoch ``e`` is a permutation drawn from ``(seed, e)``.

    The data order and every sample's augmentation are thus a function of ``(seed, position)`` only, so a run
    resumed at any step (``start`` = samples already consumed) sees exactly the batches it would have seen.
    """

    def __init__(self, num_samples: int, *, seed: int, start: int = 0) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples, self.seed, self.start = num_samples, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.num_samples)
        while True:
            rng = np.random.default_rng([self.seed, epoch])
            order, seeds = rng.permutation(self.num_samples), rng.integers(0, 2**31, self.num_samples)
            for i in range(offset, self.num_samples):
                yield int(order[i]), int(seeds[i])
            epoch, offset = epoch + 1, 0


class _SeededAugmentation(Dataset):
    """Samples of ``dataset`` passed through ``transform`` (an albumentations-backed
    ``datasets.SegmentationTransform``) reseeded per sample: reproducible and different in every worker."""

    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        image, mask = self.dataset[index]
        self.transform.set_seed(seed)
        return self.transform(image, mask)


def build_train_loader(
    dataset: Dataset, *, transform: Any, batch_size: int, workers: int, seed: int, start_step: int = 0
) -> DataLoader:
    """Endless loader of augmented batches; ``dataset`` yields raw ``(image, mask)``, ``transform`` augments.

    ``batch_size`` is the global batch: under torchrun each rank loads its ``batch_size / world_size`` share.
    """
    sampler = ShardedSampler(SeededSampler(len(dataset), seed=seed, start=start_step * batch_size),
                             global_batch=batch_size)
    return DataLoader(
        _SeededAugmentation(dataset, transform),
        batch_size=sampler.per_rank,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        # A private generator keeps the loader from drawing on the global RNG, which resumes restore.
        generator=torch.Generator().manual_seed(seed),
    )


def build_val_loader(dataset: Dataset, *, batch_size: int = 1, workers: int = 0) -> DataLoader:
    """Loader over full validation images in a fixed order (batch 1 because VOC image sizes differ); under
    torchrun over this rank's disjoint shard, whose confusion matrix :func:`validate` sums over ranks."""
    return DataLoader(shard_dataset(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                      generator=torch.Generator())


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels; a batch with none gives 0, not NaN (void is not divergence)."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp(min=1)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    amp_dtype: torch.dtype | None,
) -> float:
    """One optimizer step; returns the loss, or NaN/inf *before* touching the weights when it is not finite."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = segmentation_loss(model(images), masks)
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
        matrix = evaluate(predictor, loader, num_classes=len(class_names))
    finally:
        model.train()
    return all_reduce_confusion_matrix(matrix).scores(class_names)


@dataclass
class TrainResult:
    """What a finished run did: steps done, wall time, best and last validation scores, where files are."""

    steps: int
    seconds: float
    best_miou: float
    last_scores: dict[str, Any] | None
    out_dir: Path


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
    best_miou: float,
    scores: dict[str, Any] | None,
    class_names: Sequence[str],
    run_args: dict[str, Any],
) -> dict[str, Any]:
    """Checkpoint of plain data: the model under its own names (no DDP ``module.`` prefix) plus all run state."""
    core = unwrap_model(model)
    return {
        "model": core.state_dict(),
        "model_config": dict(core.config),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step,
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
    try:
        unwrap_model(model).load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        # The saved lr belongs to the saved schedule; a resume that changes the length (--iters) needs this one's.
        for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base_lr * factor(scheduler.last_epoch)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        return int(ckpt["step"]), float(ckpt["best_miou"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: cannot resume from this checkpoint ({one_line(exc)})") from None


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
    best_miou: float = -1.0,
    run_args: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train from ``start_step`` to ``total_steps``, validating (and saving ``last.pt``, and ``best.pt`` on a new
    best mIoU) every ``val_every`` steps and at the end; ``metrics.jsonl`` and ``curves.png`` follow along.

    A non-finite loss stops the run with a UserError before the poisoned step reaches the weights or a file.
    """
    out_dir = Path(out_dir)
    main = is_main_process()
    log = MetricsLog(out_dir / "metrics.jsonl")
    if main:
        log.reset(keep_until=start_step)  # a resumed run rewrites whatever followed its checkpoint
    model.to(device).train()
    save = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "class_names": class_names,
            "run_args": run_args or {}}
    batches = iter(train_loader)
    bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not (progress and main))
    step, scores, saved_step, images_seen, started = start_step, None, start_step, 0, time.perf_counter()
    with bar:
        while step < total_steps:
            images, masks = next(batches)
            lr = optimizer.param_groups[-1]["lr"]  # the head's rate: unscaled by --backbone-lr-scale
            loss = train_step(model, images.to(device, non_blocking=True), masks.to(device, non_blocking=True),
                              optimizer=optimizer, scheduler=scheduler, scaler=scaler, amp_dtype=amp_dtype)
            step += 1
            if not math.isfinite(loss):
                kept = f"last.pt (step {saved_step}) is kept" if saved_step else "no checkpoint was written"
                raise UserError(f"{out_dir / 'last.pt'}: training stopped at step {step}: the loss is {loss}; "
                                f"{kept}; try a lower learning rate")
            images_seen += images.shape[0] * get_world_size()
            record = {"step": step, "loss": round(loss, 6), "lr": lr}
            if step % val_every == 0 or step == total_steps:
                scores = validate(model, val_loader, class_names=class_names, device=device, amp_dtype=amp_dtype)
                best_miou = _save_validation(model, log, record, scores, step=step, best_miou=best_miou,
                                             out_dir=out_dir, main=main, save=save)
                saved_step = step
            elif main:
                log.append(record)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                            img_s=f"{images_seen / (time.perf_counter() - started):.1f}", refresh=False)
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
    log.append({**record, "miou": scores["miou"], "pixel_acc": scores["pixel_acc"]})
    state = training_state(model, step=step, best_miou=best_miou, scores=scores, **save)
    if improved:
        save_checkpoint(state, out_dir / "best.pt")
    save_checkpoint(state, out_dir / "last.pt")
    plot_curves(log.read(), out_dir / "curves.png")
    return best_miou
