"""Train DeepLabV3+ on PASCAL VOC (or any VOC-format folder) or on the built-in demo data.

    python tools/train.py --dataset demo                       # offline, a few minutes on a laptop CPU
    python tools/train.py --dataset voc --data-root data/voc --download
    python tools/train.py --resume runs/demo_mobilenetv2_os16/last.pt
    torchrun --nproc_per_node=4 tools/train.py --dataset voc       # 4 GPUs, DDP; --batch-size stays global

Flags left out take, in order: the resumed checkpoint's settings, then the dataset's defaults below.
Under torchrun, --batch-size is the global batch split evenly over the processes; BatchNorm is synchronised
across GPUs (SyncBatchNorm) unless --no-sync-bn; only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # our `datasets`, not Hugging Face's

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from backbones import list_backbones  # noqa: E402
from datasets import (  # noqa: E402
    VOCSegmentation,
    build_eval_transform,
    build_train_transform,
    download_voc,
    ensure_demo_dataset,
    load_class_names,
)
from deeplab import distributed, training  # noqa: E402
from deeplab.checkpoint import check_writable, load_checkpoint  # noqa: E402
from deeplab.errors import UserError, report_user_errors  # noqa: E402
from deeplab.evaluation import resolve_device  # noqa: E402
from deeplab.model import build_model  # noqa: E402
from deeplab.schedule import build_optimizer, build_scheduler, default_warmup_steps  # noqa: E402

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Demo: 128x128 scenes, so the crop is the whole image; sized to learn visibly in minutes on 2 CPU cores.
    "demo": {"data_root": "data/demo", "iters": 200, "batch_size": 8, "crop_size": 128, "lr": 0.05,
             "val_every": 50, "pretrained_backbone": "none"},
    # VOC: the DeepLabV3+ recipe (batch 16, crop 512, lr 0.01, 30k steps) from ImageNet weights.
    "voc": {"data_root": "data/voc", "iters": 30000, "batch_size": 16, "crop_size": 512, "lr": 0.01,
            "val_every": 1000, "pretrained_backbone": "imagenet"},
}
COMMON_DEFAULTS: dict[str, Any] = {
    "dataset": "voc", "backbone": "mobilenetv2", "output_stride": 16, "split": "train", "val_split": "val",
    "weight_decay": 1e-4, "backbone_lr_scale": 1.0, "warmup_iters": None, "epochs": None, "seed": 0,
    "amp": "auto", "val_batch_size": 1, "freeze_bn": False,
    "freeze_early_stages": False,
}
# Settings of the machine at hand, never taken over from a resumed checkpoint.
MACHINE_DEFAULTS: dict[str, Any] = {"workers": min(4, os.cpu_count() or 1), "device": "auto", "no_sync_bn": False,
                                    "dist_timeout": distributed.DEFAULT_TIMEOUT_S}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags; defaults are None where they depend on the dataset or on a resumed checkpoint."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS), help="voc (default) or demo (generated, offline)")
    p.add_argument("--data-root", help="folder holding VOCdevkit/ (default data/voc or data/demo)")
    p.add_argument("--split", help="training split (default train; train_aug after tools/convert_sbd.py)")
    p.add_argument("--val-split", help="validation split (default val)")
    p.add_argument("--download", action="store_true", help="download VOC 2012 into --data-root if missing")
    p.add_argument("--backbone", choices=list_backbones(), help="feature extractor (default mobilenetv2)")
    p.add_argument("--output-stride", type=int, choices=(8, 16), help="backbone output stride (default 16)")
    p.add_argument("--pretrained-backbone", metavar="{imagenet,none,PATH}",
                   help="backbone initialisation (default imagenet on voc, none on demo)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help="total optimizer steps (demo 200, voc 30000)")
    length.add_argument("--epochs", type=int, help="train this many passes over the split instead of --iters")
    p.add_argument("--batch-size", type=int,
                   help="GLOBAL images per step, split evenly over torchrun's processes (demo 8, voc 16)")
    p.add_argument("--crop-size", type=int, help="square training crop (demo 128, voc 512)")
    p.add_argument("--lr", type=float, help="base learning rate (demo 0.05, voc 0.01)")
    p.add_argument("--weight-decay", type=float, help="L2 on conv/linear weights, not BN/bias (default 1e-4)")
    p.add_argument("--backbone-lr-scale", type=float, help="backbone lr = lr x this (default 1.0)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up steps (default 5%% of the run, at most 500)")
    p.add_argument("--val-every", type=int, help="validate and save last.pt every N steps (demo 50, voc 1000)")
    p.add_argument("--val-batch-size", type=int, help="validation batch of full images (default 1)")
    p.add_argument("--workers", type=int, help=f"data-loading processes (default {MACHINE_DEFAULTS['workers']})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when available")
    p.add_argument("--amp", choices=training.AMP_MODES, help="mixed precision on CUDA (default auto: bf16/fp16)")
    p.add_argument("--freeze-bn", action="store_true", default=None,
                   help="freeze BatchNorm statistics and scale/shift (fine-tuning with small batches)")
    p.add_argument("--freeze-early-stages", action="store_true", default=None,
                   help="freeze the backbone up to its stride-4 feature (weights and BN statistics)")
    p.add_argument("--no-sync-bn", action="store_true", default=None,
                   help="under torchrun on GPUs, normalise per GPU instead of with SyncBatchNorm")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun, fail when other ranks stay silent this long (default 600)")
    p.add_argument("--seed", type=int, help="seed of initialisation, data order and augmentation (default 0)")
    p.add_argument("--out", help="output folder (default runs/<dataset>_<backbone>_os<N>)")
    p.add_argument("--resume", metavar="CKPT", help="continue the run saved in this last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    return p


def resolve_settings(cli: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """Merge flags given > a resumed run's saved settings > dataset defaults > common defaults."""
    given = {k: v for k, v in cli.items() if v is not None}
    dataset = given.get("dataset", saved.get("dataset", COMMON_DEFAULTS["dataset"]))
    resumed = {k: v for k, v in saved.items() if k not in MACHINE_DEFAULTS}
    settings = {**COMMON_DEFAULTS, **MACHINE_DEFAULTS, **DATASET_DEFAULTS[dataset], **resumed, **given}
    settings["dataset"] = dataset
    if "epochs" in given:  # counted in steps once the split's size is known (see run)
        settings["iters"] = None
    if settings.get("out") is None:
        settings["out"] = f"runs/{dataset}_{settings['backbone']}_os{settings['output_stride']}"
    for key in ("iters", "epochs", "batch_size", "crop_size", "val_every", "val_batch_size"):
        if settings.get(key) is not None and settings[key] < 1:
            raise UserError(f"--{key.replace('_', '-')}: must be at least 1, got {settings[key]}")
    return settings


def prepare_data(dataset: str, root: str | Path, *, download: bool) -> Path:
    """Make the data root usable: generate the demo set, or fetch VOC when asked."""
    if dataset == "demo":
        return ensure_demo_dataset(root)
    if download:
        download_voc(root)
    return Path(root)


def check_resume(ckpt: dict[str, Any], path: str, *, backbone: str, num_classes: int) -> None:
    """Refuse to resume into a different architecture or label set, naming both values."""
    config = ckpt["model_config"]
    if config.get("backbone") != backbone:
        raise UserError(f"{path}: checkpoint backbone is {config.get('backbone')}, but this run uses {backbone}")
    if config.get("num_classes") != num_classes:
        raise UserError(f"{path}: checkpoint has {config.get('num_classes')} classes, but the data has {num_classes}")


def pretrained_argument(value: str) -> bool | str:
    """``imagenet`` -> True, ``none`` -> False, anything else is a weights file path."""
    return {"imagenet": True, "none": False}.get(value.lower(), value)


def build_parts(s: dict[str, Any], *, ckpt: dict[str, Any] | None, resume_path: str | None, num_classes: int,
                device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any], int, float]:
    """Model (and its DDP wrapper), optimiser, scheduler, scaler, AMP dtype; restored from ``ckpt`` if given."""
    training.seed_everything(s["seed"])
    model = build_model(backbone=s["backbone"], num_classes=num_classes, output_stride=s["output_stride"],
                        pretrained_backbone=False if ckpt else pretrained_argument(s["pretrained_backbone"]))
    model.to(device)
    if s["freeze_bn"]:
        distributed.freeze_batchnorm(model)  # before the optimiser, which then leaves BN scales and shifts out
    if s["freeze_early_stages"]:
        distributed.freeze_early_stages(model.backbone)
    optimizer = build_optimizer(model, lr=s["lr"], weight_decay=s["weight_decay"],
                                backbone_lr_scale=s["backbone_lr_scale"])
    warmup = s["warmup_iters"] if s["warmup_iters"] is not None else default_warmup_steps(s["iters"])
    amp_dtype = training.resolve_amp(s["amp"], device)
    scheduler = build_scheduler(optimizer, total_steps=s["iters"], warmup_steps=warmup)
    parts = {"optimizer": optimizer, "scheduler": scheduler,
             "scaler": torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None, "amp_dtype": amp_dtype}
    start, best = (training.restore_training_state(ckpt, model=model, optimizer=optimizer, scheduler=scheduler,
                                                   scaler=parts["scaler"], path=resume_path) if ckpt else (0, -1.0))
    # Frozen statistics need no synchronising, and converting to SyncBatchNorm would drop the freezing hooks.
    frozen = s["freeze_bn"] or s["freeze_early_stages"]
    wrapped = distributed.wrap_model(model, device, sync_bn=not (s["no_sync_bn"] or frozen))
    return model, wrapped, parts, start, best


def run(settings: dict[str, Any], *, ckpt: dict[str, Any] | None, resume_path: str | None,
        download: bool, progress: bool) -> training.TrainResult:
    """Build data, model and optimiser from resolved ``settings`` and train (resuming ``ckpt`` if given)."""
    s = settings
    device = distributed.setup_distributed(resolve_device(s["device"]), timeout_s=s["dist_timeout"])
    world = distributed.get_world_size()
    if s["batch_size"] % world:
        raise UserError(f"--batch-size {s['batch_size']}: the global batch must be divisible by the {world} processes")
    out_dir = check_writable(s["out"])
    with distributed.main_process_first():  # rank 0 generates or downloads the data, the others then read it
        root = prepare_data(s["dataset"], s["data_root"], download=download)
    class_names = load_class_names(root)
    if ckpt is not None:
        check_resume(ckpt, resume_path, backbone=s["backbone"], num_classes=len(class_names))
    train_set = VOCSegmentation(root, split=s["split"], class_names=class_names)
    if s.get("epochs"):
        s["iters"], s["epochs"] = s["epochs"] * math.ceil(len(train_set) / s["batch_size"]), None
    model, wrapped, parts, start, best = build_parts(s, ckpt=ckpt, resume_path=resume_path,
                                                     num_classes=len(class_names), device=device)
    val_set = VOCSegmentation(root, split=s["val_split"], class_names=class_names,
                              transform=build_eval_transform(mean=model.mean, std=model.std))
    train_loader = training.build_train_loader(
        train_set, transform=build_train_transform(crop_size=s["crop_size"], mean=model.mean, std=model.std),
        batch_size=s["batch_size"], workers=s["workers"], seed=s["seed"], start_step=start)
    val_loader = training.build_val_loader(val_set, batch_size=s["val_batch_size"], workers=min(s["workers"], 2))
    if training.is_main_process():
        where = f"{world} processes on {device.type}" if world > 1 else str(device)
        print(f"training {s['backbone']} OS{s['output_stride']} on {s['dataset']} ({len(train_set)} train / "
              f"{len(val_set)} val images, {len(class_names)} classes) on {where}, steps {start}->{s['iters']}")
    return training.train(
        wrapped, train_loader=train_loader, val_loader=val_loader, total_steps=s["iters"], val_every=s["val_every"],
        out_dir=out_dir, class_names=class_names, device=device, start_step=start, best_miou=best, run_args=s,
        progress=progress, **parts)


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, train, print a summary; exit status 2 with one line on a user error."""
    args = vars(get_args_parser().parse_args(argv))
    resume_path, download, no_progress = args.pop("resume"), args.pop("download"), args.pop("no_progress")
    ckpt = load_checkpoint(resume_path) if resume_path else None
    settings = resolve_settings(args, ckpt.get("args", {}) if ckpt else {})
    try:
        result = run(settings, ckpt=ckpt, resume_path=resume_path, download=download, progress=not no_progress)
        report = training.is_main_process()
    finally:
        distributed.teardown_distributed()  # also on errors: a clean exit instead of an abort in Gloo's threads
    if report:
        minutes, seconds = divmod(int(result.seconds), 60)
        last = result.last_scores or {}
        print(f"done: {result.steps} steps in {minutes}m{seconds:02d}s; best val mIoU {result.best_miou:.4f}"
              + (f", last {last['miou']:.4f} (pixel acc {last['pixel_acc']:.4f})" if last else ""))
        print(f"files in {result.out_dir}: best.pt, last.pt, metrics.jsonl, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
