"""Training settings: one typed config, the dataset presets, and the rule that merges them.

A setting takes, in order: the flag given > the resumed run's saved value > the dataset's preset > the common
default declared on :class:`TrainConfig`. Machine settings (:data:`MACHINE_FIELDS`) are never inherited from a
resumed run: they belong to the machine at hand, not to the run.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backbones import check_imagenet_weights, list_backbones, unknown_backbone_message

from ..errors import UserError
from .distributed import DEFAULT_TIMEOUT_S

__all__ = ["MACHINE_FIELDS", "PRESETS", "TrainConfig", "describe_default", "resolve_config"]


@dataclass
class TrainConfig:
    """Every setting of a training run, as plain data (saved in checkpoints under ``args``).

    Fields left ``None`` here come from the dataset's preset (:data:`PRESETS`) or are derived (``out``,
    ``warmup_iters``); :func:`resolve_config` fills them. ``init_from`` stays ``None`` unless a run starts from a
    checkpoint's weights.
    """

    dataset: str = "voc"
    data_root: str | None = None
    split: str = "train"
    val_split: str = "val"
    backbone: str = "mobilenetv2"
    output_stride: int = 16
    pretrained_backbone: str | None = None
    init_from: str | None = None  # checkpoint whose matching tensors start a new run (fine-tuning)
    iters: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    crop_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    backbone_lr_scale: float = 1.0
    warmup_iters: int | None = None
    val_every: int | None = None
    val_batch_size: int = 1
    seed: int = 0
    amp: str = "auto"
    freeze_bn: bool = False
    freeze_early_stages: bool = False
    out: str | None = None
    # Machine settings (see MACHINE_FIELDS).
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    device: str = "auto"
    sync_bn: bool = True
    dist_timeout: float = DEFAULT_TIMEOUT_S


MACHINE_FIELDS = ("workers", "device", "sync_bn", "dist_timeout")

PRESETS: dict[str, dict[str, Any]] = {
    # Demo: 128x128 scenes, so the crop is the whole image; sized to learn visibly in minutes on 2 CPU cores.
    "demo": {"data_root": "data/demo", "iters": 200, "batch_size": 8, "crop_size": 128, "lr": 0.05,
             "val_every": 50, "pretrained_backbone": "none"},
    # VOC: the DeepLabV3+ recipe (batch 16, crop 512, lr 0.01, 30k steps) from ImageNet weights.
    "voc": {"data_root": "data/voc", "iters": 30000, "batch_size": 16, "crop_size": 512, "lr": 0.01,
            "val_every": 1000, "pretrained_backbone": "imagenet"},
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_AT_LEAST_ONE = ("iters", "epochs", "batch_size", "crop_size", "val_every", "val_batch_size")


def describe_default(name: str) -> str:
    """The default of setting ``name`` in words, for help texts: ``demo 200, voc 30000`` or ``0.0001``."""
    if any(name in preset for preset in PRESETS.values()):
        return ", ".join(f"{dataset} {preset[name]}" for dataset, preset in PRESETS.items() if name in preset)
    spec = _FIELDS[name]
    value = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
    return str(value)


def resolve_config(flags: Mapping[str, Any], resumed: Mapping[str, Any] | None = None) -> TrainConfig:
    """Merge ``flags`` (``None`` = not given) > ``resumed`` (a saved run's ``args``) > preset > common defaults.

    Keys of ``resumed`` that are no longer settings (older checkpoints) are ignored.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    unknown = sorted(set(given) - set(_FIELDS))
    if unknown:
        raise ValueError(f"not training settings: {', '.join(unknown)}")
    resumed = resumed or {}
    inherited = {k: v for k, v in resumed.items() if k in _FIELDS and k not in MACHINE_FIELDS}
    dataset = given.get("dataset", inherited.get("dataset", TrainConfig.dataset))
    if dataset not in PRESETS:
        raise UserError(f"--dataset {dataset}: choose one of {', '.join(sorted(PRESETS))}")
    config = TrainConfig(**{**PRESETS[dataset], **inherited, **given, "dataset": dataset})
    if config.backbone not in list_backbones():
        raise UserError(f"--backbone: {unknown_backbone_message(config.backbone)}")
    starts_fresh = not resumed and not config.init_from  # only a fresh run loads ImageNet weights
    if starts_fresh and str(config.pretrained_backbone).lower() == "imagenet":  # before any data is fetched
        check_imagenet_weights(config.backbone)
    if "epochs" in given:  # counted in steps once the split's size is known (see fit)
        config.iters = None
    if config.out is None:
        config.out = f"runs/{dataset}_{config.backbone}_os{config.output_stride}"
    for key in _AT_LEAST_ONE:
        value = getattr(config, key)
        if value is not None and value < 1:
            raise UserError(f"--{key.replace('_', '-')}: must be at least 1, got {value}")
    return config
