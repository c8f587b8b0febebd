"""One training run from a :class:`~deeplab.engine.config.TrainConfig`: data, model, optimizer, then the loop.

The flow reads top to bottom: dataset -> transforms -> model -> optimizer and schedule -> (resume) ->
:func:`~deeplab.engine.loop.train` (loss, step, validation, checkpoints).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from backbones import build_backbone, pretrained_argument
from datasets import (
    DEMO_VARIANTS,
    IGNORE_INDEX,
    VOCSegmentation,
    build_eval_transform,
    build_train_transform,
    download_voc,
    ensure_demo_dataset,
    load_class_names,
)
from datasets.class_stats import class_pixel_counts

from ..checkpoint import class_names_source, match_class_names, model_from_config
from ..device import resolve_device
from ..errors import USER_ERRORS, Interrupted, RunWideError, UserError, one_line
from ..evaluation.evaluate import first_ids, warn_repeated_ids
from ..inference.tta import ScoresNotFinite
from ..models import DeepLabV3Plus
from . import distributed
from .balance import prepare_balance, read_weights_file_first
from .config import TrainConfig, changed_settings
from .data import build_train_loader, build_val_loader
from .freeze import freeze_batchnorm, freeze_early_stages
from .loop import LossNotFinite, RunFileNotWritten, TrainResult, resolve_amp, train
from .run_dir import claim_run_dir, last_good_checkpoint, latest_checkpoint
from .schedule import build_optimizer, build_scheduler, default_warmup_steps
from .state import restore_training_state, seed_everything
from .tensorboard import require_tensorboard
from .warm_start import load_init_weights, read_init_checkpoint

__all__ = ["fit"]


def fit(
    config: TrainConfig,
    *,
    resume: dict[str, Any] | None = None,
    resume_path: str | Path | None = None,
    download: bool = False,
    progress: bool = True,
    ignore_class_names: bool = False,
) -> TrainResult:
    """Train as ``config`` says, continuing the checkpoint ``resume`` (read from ``resume_path``) if given.

    The run owns its output folder (see :mod:`~deeplab.engine.run_dir`): ``config.out``, else beside the resumed
    checkpoint, else the first free ``runs/<dataset>_<backbone>_os<N>[-k]``; ``config.out`` is set to it.
    Under torchrun this process joins the group first; only rank 0 prints, writes files and locks the folder.
    """
    c = config
    device = distributed.setup_distributed(resolve_device(c.device), timeout_s=c.dist_timeout)
    amp_dtype = _run_amp(c.amp, device, resume=resume, resume_path=resume_path)  # before the data: fails at once
    _check_batch_divides(c.batch_size, distributed.get_world_size(), resume=resume, resume_path=resume_path)
    if c.tensorboard:  # before any data is read: the missing package is one line, at once
        _require_tensorboard_on_every_rank()
    init = read_init_checkpoint(c.init_from, backbone=c.backbone) if c.init_from and resume is None else None
    saved_path = resume_path if resume is not None else c.init_from
    if resume is not None or init is not None:  # a model_config the model cannot take fails here, before any work
        model_from_config((resume or init)["model_config"], saved_path, output_stride=c.output_stride)
    if resume is None and init is None:
        _check_weights_file(c)
    if resume is not None:
        _check_resumable(resume, resume_path)
        _check_resume_freezing(c, resume.get("args", {}), resume_path)
        _say_changed_settings(c, resume, resume_path)
        if c.iters is not None and isinstance(resume.get("step"), int):  # --epochs: once the split is counted
            _check_steps_left(c.iters, resume["step"], resume_path)
    step = resume.get("step") if resume is not None else 0
    with _run_folder(c, resume=resume, resume_path=resume_path, step=step) as out_dir:
        c.out = str(out_dir)
        try:
            with _naming_the_last_good_checkpoint(out_dir, resume_path=resume_path, start_step=step):
                return _fit_in(c, out_dir, device=device, amp_dtype=amp_dtype, resume=resume,
                               resume_path=resume_path, init=init, saved_path=saved_path, download=download,
                               progress=progress, ignore_class_names=ignore_class_names)
        except KeyboardInterrupt:
            raise Interrupted(last_good_checkpoint(out_dir, resume_path=resume_path)) from None
        except LossNotFinite as exc:
            raise RunWideError(f"{exc}; {last_good_checkpoint(out_dir, resume_path=resume_path)}") from None
        except (ScoresNotFinite, RunFileNotWritten) as exc:
            # One rank's own: NaN scores on its share of a validation; a file only rank 0 writes (the other ranks
            # learn of it as a lost peer).
            raise UserError(f"{exc}; {last_good_checkpoint(out_dir, resume_path=resume_path)}") from None
        except RuntimeError as exc:
            if not distributed.peer_lost(exc):
                raise
            raise UserError(f"rank {distributed.get_rank()}: another process of this run "
                            f"{distributed.how_peer_was_lost(exc, c.dist_timeout)} ({one_line(exc, 160)}); "
                            f"{last_good_checkpoint(out_dir, resume_path=resume_path)}") from None


@contextlib.contextmanager
def _run_folder(c: TrainConfig, *, resume: dict[str, Any] | None, resume_path: str | Path | None,
                step: Any) -> Iterator[Path]:
    """The run's folder, claimed by rank 0 for the block; the other ranks learn which it is, or why rank 0 refused
    it (a folder holding another run), and stop with that line instead of a lost peer's traceback. ``step``: the
    resumed checkpoint's (0 for a new run)."""
    if not distributed.is_main_process():
        folder, refusal = distributed.broadcast_object(None)
        if refusal is not None:
            raise RunWideError(refusal)
        yield Path(folder)
        return
    with contextlib.ExitStack() as stack:
        try:
            folder = stack.enter_context(claim_run_dir(
                c.out, default=Path("runs") / f"{c.dataset}_{c.backbone}_os{c.output_stride}",
                resume_path=resume_path, resume_step=step if isinstance(step, int) else 0))
        except UserError as exc:
            distributed.broadcast_object((None, str(exc)))
            raise
        distributed.broadcast_object((str(folder), None))
        yield folder


@contextlib.contextmanager
def _naming_the_last_good_checkpoint(out_dir: Path, *, resume_path: str | Path | None,
                                     start_step: Any) -> Iterator[None]:
    """An error that ends the run after it saved a checkpoint names the last good one: a bad image met at step 5000
    in its one line, a crash (a bug, out of memory) in a note above its traceback. Errors that name it themselves,
    and those before the run saved anything (a flag, the data), pass as they are."""
    try:
        yield
    except (LossNotFinite, ScoresNotFinite, RunFileNotWritten):
        raise
    except Exception as exc:
        found = latest_checkpoint(out_dir)
        if (found is None or not isinstance(start_step, int) or found[0] <= start_step
                or (isinstance(exc, RuntimeError) and distributed.peer_lost(exc))):
            raise
        kept = last_good_checkpoint(out_dir, resume_path=resume_path)
        if isinstance(exc, USER_ERRORS):
            said = RunWideError if isinstance(exc, RunWideError) else UserError
            raise said(f"{one_line(exc)}; {kept}") from None
        if distributed.is_main_process():
            print(f"note: training stopped on the error below; {kept}", file=sys.stderr)
        raise


def _fit_in(
    c: TrainConfig,
    out_dir: Path,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    resume: dict[str, Any] | None,
    resume_path: str | Path | None,
    init: dict[str, Any] | None,
    saved_path: str | Path | None,
    download: bool,
    progress: bool,
    ignore_class_names: bool,
) -> TrainResult:
    """The run itself, in its claimed folder: data, model, optimizer, (resume), then the loop."""
    world = distributed.get_world_size()
    with distributed.main_process_first():  # rank 0 generates or downloads the data, the others then read it
        root = _prepare_data(c.dataset, c.data_root, download=download)
    if resume is not None and not root.exists():  # how to get VOC would be the wrong advice for data that moved
        raise UserError(f"--data-root {root}: no such folder; {resume_path} was trained on data there: if it has "
                        "moved, pass --data-root with its new place")
    class_names = load_class_names(root)
    if resume is not None:
        _check_resume(resume, resume_path, backbone=c.backbone, num_classes=len(class_names), data_root=root)
        class_names = match_class_names(resume_path, resume, class_names, data_root=root,
                                        allow_mismatch=ignore_class_names)
    read_weights_file_first(c, num_classes=len(class_names))
    train_set = VOCSegmentation(root, split=c.split, class_names=class_names)
    train_pixels = _checked_pixel_counts(train_set, workers=c.workers)
    _check_labelled(train_pixels, train_set, flag="--split", purpose="train on")
    criterion, focus, paste = prepare_balance(c, train_pixels, class_names, announce=distributed.is_main_process())
    if c.epochs:
        c.iters, c.epochs = _epoch_steps(c.epochs, len(train_set), c.batch_size, resume=resume), None
    model = _build_model(c, num_classes=len(class_names), saved=resume or init, saved_path=saved_path)
    if init is not None:
        warm = load_init_weights(model, init, class_names, ignore_class_names=ignore_class_names)
        if distributed.is_main_process():
            print("\n".join(warm.summary(c.init_from)))
    model = model.to(device)
    optimizer = build_optimizer(model, lr=c.lr, weight_decay=c.weight_decay, backbone_lr_scale=c.backbone_lr_scale)
    warmup = c.warmup_iters if c.warmup_iters is not None else default_warmup_steps(c.iters)
    scheduler = build_scheduler(optimizer, total_steps=c.iters, warmup_steps=warmup)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    start, best, start_sample = 0, -1.0, 0
    if resume is not None:
        start, best = restore_training_state(resume, model=model, optimizer=optimizer, scheduler=scheduler,
                                             scaler=scaler, path=resume_path)
        _check_steps_left(c.iters, start, resume_path)
        best = _comparable_best(best, resume.get("args", {}), c)
        start_sample = _consumed_samples(resume, start, batch_size=c.batch_size)
    # Frozen statistics need no synchronising, and converting to SyncBatchNorm would drop the freezing hooks.
    frozen = c.freeze_bn or c.freeze_early_stages
    wrapped = distributed.wrap_model(model, device, sync_bn=c.sync_bn and not frozen)
    train_loader = build_train_loader(
        train_set, transform=build_train_transform(crop_size=c.crop_size, mean=model.mean, std=model.std,
                                                     scale=(c.min_scale, c.max_scale), color_jitter=c.color_jitter,
                                                     any_orientation=c.any_orientation),
        batch_size=c.batch_size, workers=c.workers, seed=c.seed, start_sample=start_sample, focus=focus,
        paste=paste)
    val_set = VOCSegmentation(root, split=c.val_split, class_names=class_names,
                              transform=build_eval_transform(mean=model.mean, std=model.std))
    val_pixels = _checked_pixel_counts(val_set, workers=min(c.workers, 2)).sum(axis=0)
    _check_labelled(val_pixels, val_set, flag="--val-split", purpose="validate on")
    val_loader = build_val_loader(val_set, batch_size=c.val_batch_size, workers=min(c.workers, 2))
    if distributed.is_main_process():
        where = f"{world} processes on {device.type}" if world > 1 else str(device)
        print(f"training {c.backbone} OS{c.output_stride} on {c.dataset} ({len(train_set)} train / "
              f"{len(val_set)} val images, {len(class_names)} classes) on {where}, steps {start}->{c.iters}")
        _warn_unlabelled([name for name, count in zip(class_names, val_pixels) if count == 0])
        warn_repeated_ids(val_set.ids, split=c.val_split, scores="validation scores")
        _warn_overlap(train_set.ids, val_set.ids, train_split=c.split, val_split=c.val_split)
    return train(
        wrapped, train_loader=train_loader, val_loader=val_loader, optimizer=optimizer, scheduler=scheduler,
        scaler=scaler, amp_dtype=amp_dtype, total_steps=c.iters, val_every=c.val_every, out_dir=out_dir,
        class_names=class_names, device=device, start_step=start, start_sample=start_sample, best_miou=best,
        run_args=dataclasses.asdict(c), progress=progress, criterion=criterion.to(device),
        tensorboard=c.tensorboard,
        history=Path(resume_path).parent / "metrics.jsonl" if resume_path is not None else None)


def _require_tensorboard_on_every_rank() -> None:
    """Check for TensorBoard in every process, not rank 0 alone: the others would otherwise go on and die waiting
    for it with a lost peer's traceback. A missing package is missing alike for every rank of a machine."""
    try:
        require_tensorboard()
    except UserError as exc:
        raise RunWideError(str(exc)) from None


def _checked_pixel_counts(dataset: VOCSegmentation, *, workers: int) -> np.ndarray:
    """``counts[image, class]`` of a split, every mask decoded and checked against its image on the way (cached
    beside the data, so once per set of files): a bad one would otherwise end the run when first loaded, before
    any checkpoint. Rank 0 counts and caches, the others read the cache."""
    with distributed.main_process_first():
        return class_pixel_counts(dataset, workers=workers)


def _check_labelled(pixels: np.ndarray, dataset: VOCSegmentation, *, flag: str, purpose: str) -> None:
    """Refuse a split whose masks are void everywhere (objects saved as 255, a mask export gone wrong): training on
    it learns nothing (loss 0) and validating on it scores a meaningless mIoU of 0, run after run."""
    if not pixels.sum():
        raise UserError(f"{flag} {dataset.split}: every pixel of its masks under {dataset.root} is void "
                        f"({IGNORE_INDEX}); nothing to {purpose}")


def _prepare_data(dataset: str, root: str | Path, *, download: bool) -> Path:
    """Make the data root usable: generate the demo set, or fetch VOC when asked."""
    if dataset in DEMO_VARIANTS:
        return ensure_demo_dataset(root, variant=dataset)
    if download:
        download_voc(root)
    return Path(root)


def _warn_unlabelled(absent: list[str]) -> None:
    """Name the classes no validation mask holds: their IoU measures nothing, and a class the masks store as void is
    a common slip that would otherwise pass unnoticed behind a fine mIoU."""
    if absent:
        names = ", ".join(repr(name) for name in absent)
        which = f"class {names} occurs" if len(absent) == 1 else f"classes {names} occur"
        print(f"warning: {which} in no validation mask; left out of mIoU, or scored 0 where predicted "
              f"(masks store {'it' if len(absent) == 1 else 'them'} as another value? 255 is void)")


def _warn_overlap(train_ids: list[str], val_ids: list[str], *, train_split: str, val_split: str) -> None:
    """Name the validation images the run also trains on (a custom split made by hand): their scores measure
    memory, not how the model does on images it has not seen."""
    shared = sorted(set(val_ids) & set(train_ids))
    if shared and train_split != val_split:
        print(f"warning: {len(shared)} of the {len(set(val_ids))} images of split {val_split} are also in split "
              f"{train_split} ({first_ids(shared)}); the validation scores flatter the model on them")


def _check_resume(ckpt: dict[str, Any], path: str | Path | None, *, backbone: str, num_classes: int,
                  data_root: Path) -> None:
    """Refuse to resume into a different architecture or label set, naming both values (and where the data's class
    names come from: a classes.txt left behind reads as VOC's 21)."""
    config = ckpt["model_config"]
    if config.get("backbone") != backbone:
        raise UserError(f"{path}: checkpoint backbone is {config.get('backbone')}, but this run uses {backbone}")
    if config.get("num_classes") != num_classes:
        raise UserError(f"{path}: checkpoint has {config.get('num_classes')} classes, but "
                        f"{class_names_source(data_root)} has {num_classes}")


def _check_weights_file(c: TrainConfig) -> None:
    """Load a ``--pretrained-backbone`` file into a throwaway backbone: a wrong path or another architecture's file
    fails at once, not after the data is generated, downloaded or counted."""
    weights = pretrained_argument(c.pretrained_backbone)
    if isinstance(weights, str):
        build_backbone(c.backbone, output_stride=c.output_stride, pretrained=weights)


def _comparable_best(best: float, saved_args: dict[str, Any], c: TrainConfig) -> float:
    """The resumed run's best mIoU if it validates on the split it was measured on, else -1 (best.pt is chosen anew,
    said in one line): an mIoU on other images does not compare, and would keep or replace best.pt wrongly. (A
    data root given anew is most often the same data moved, so only the split name counts.)"""
    split = saved_args.get("val_split")
    if best < 0 or split is None or split == c.val_split:  # nothing to compare, a checkpoint that does not say, same
        return best
    if distributed.is_main_process():
        print(f"note: this run validates on split {c.val_split}, but its best mIoU {best:.4f} was measured on split "
              f"{split}; best.pt is chosen anew from the next validation")
    return -1.0


def _say_changed_settings(c: TrainConfig, resume: dict[str, Any], resume_path: str | Path | None) -> None:
    """One line naming the settings this resume changes from its run's (flags or a recipe given now): the run goes
    on with them, no longer as it would have uninterrupted."""
    changed = changed_settings(c, resume.get("args", {}))
    if changed and distributed.is_main_process():
        print(f"note: {resume_path} goes on with changed settings: {', '.join(changed)}")


def _run_amp(amp: str, device: torch.device, *, resume: dict[str, Any] | None,
             resume_path: str | Path | None) -> torch.dtype | None:
    """The autocast dtype of ``--amp``; where the mode cannot run here and is the resumed run's own (a GPU run
    continued on a CPU), the error says so and how to go on, as the user never typed it."""
    try:
        return resolve_amp(amp, device)
    except UserError as exc:
        if resume is None or resume.get("args", {}).get("amp") != amp:
            raise
        raise UserError(f"{exc}; {resume_path} was trained with it: pass --amp off to resume it here") from None


def _epoch_steps(epochs: int, num_images: int, batch_size: int, *, resume: dict[str, Any] | None) -> int:
    """The step count of ``epochs`` passes over the split, an epoch being ``ceil(images / batch)`` steps; a resumed run
    counts the epochs done at the batch size it trained with, so one resumed at another batch size (more or fewer
    processes) still trains ``epochs`` in all, and one resumed at its own ends where it would have."""
    per_epoch = math.ceil(num_images / batch_size)
    if resume is None or not isinstance(resume.get("step"), int):  # a damaged one: restoring it says what is wrong
        return epochs * per_epoch
    saved = _saved_batch_size(resume, default=batch_size)
    done = Fraction(_consumed_samples(resume, resume["step"], batch_size=batch_size),
                    math.ceil(num_images / saved) * saved)
    return resume["step"] + max(0, math.ceil((epochs - done) * per_epoch))


def _consumed_samples(ckpt: dict[str, Any], step: int, *, batch_size: int) -> int:
    """How far into the training stream checkpoint ``ckpt`` (at ``step``) is: a run resumed with another
    --batch-size goes on from there, instead of from step x the new batch (repeating or skipping samples). A
    checkpoint that does not record it was trained at its saved batch size throughout."""
    samples = ckpt.get("samples")
    return samples if isinstance(samples, int) else step * _saved_batch_size(ckpt, default=batch_size)


def _saved_batch_size(ckpt: dict[str, Any], *, default: int) -> int:
    """The batch size checkpoint ``ckpt``'s run trained with, ``default`` where it does not say."""
    saved = ckpt.get("args", {}).get("batch_size")
    return saved if isinstance(saved, int) else default


def _check_batch_divides(batch_size: int, world: int, *, resume: dict[str, Any] | None,
                         resume_path: str | Path | None) -> None:
    """Refuse a global batch the processes cannot share evenly; one the resumed run set (not typed now) is named
    as that run's, with the way out: a run resumes at any batch size."""
    if batch_size % world == 0:
        return
    message = f"--batch-size {batch_size}: the global batch must be divisible by the {world} processes"
    if resume is not None and resume.get("args", {}).get("batch_size") == batch_size:
        message += (f"; it is the batch size {resume_path} was trained with: pass --batch-size with a multiple of "
                    f"{world} (a run resumes at any batch size)")
    raise UserError(message)


def _check_resumable(ckpt: dict[str, Any], path: str | Path | None) -> None:
    """Refuse a checkpoint without a run's state (an imported one, weights only) before the defaults it lacks send
    the run looking for data it never used."""
    missing = [key for key in ("optimizer", "scheduler", "step", "rng") if key not in ckpt]
    if missing:
        raise UserError(f"{path}: cannot resume from this checkpoint: it holds weights but no training state "
                        f"({', '.join(missing)}); start a new run from them with --init-from {path}")


def _check_steps_left(iters: int, start: int, path: str | Path | None) -> None:
    """Refuse a resume with no step left to train: it would only rewrite what its run already holds (and leave an
    empty log in a new --out)."""
    if start >= iters:
        raise UserError(f"--iters/--epochs: {iters} steps asked for, but {path} is at step {start} already; ask for "
                        "more to continue it")


def _check_resume_freezing(c: TrainConfig, saved_args: dict[str, Any], path: str | Path | None) -> None:
    """Refuse a resume that freezes what its run trained: the saved optimizer state holds those weights, so the
    run cannot go on with fewer; a new run from the checkpoint's weights can."""
    for key in ("freeze_bn", "freeze_early_stages"):
        if getattr(c, key) and not saved_args.get(key, False):
            raise UserError(f"--{key.replace('_', '-')}: {path} was trained without it, and a resumed run keeps "
                            f"training the same weights; start a new run from it with --init-from {path}")


def _build_model(c: TrainConfig, *, num_classes: int, saved: dict[str, Any] | None,
                 saved_path: str | Path | None) -> nn.Module:
    """The seeded model with the requested parts frozen: the architecture of checkpoint ``saved`` (a resumed or
    initialising one, read from ``saved_path``: decoder variant, normalisation, backbone options) at this run's
    stride and classes, else a new one with ImageNet (or file) backbone weights."""
    seed_everything(c.seed)
    if saved is not None:
        model = model_from_config(saved["model_config"], saved_path, output_stride=c.output_stride,
                                  num_classes=num_classes)
    else:
        model = DeepLabV3Plus(c.backbone, num_classes=num_classes, output_stride=c.output_stride,
                              pretrained_backbone=c.pretrained_backbone)
    if c.freeze_bn:
        freeze_batchnorm(model)  # before the optimiser, which then leaves BN scales and shifts out
    if c.freeze_early_stages:
        freeze_early_stages(model.backbone)
    return model
