"""Training settings: one typed config, the dataset presets, and the rule that merges them.

A setting takes, in order: the flag given > the recipe given (:data:`RECIPES`) > the resumed run's saved value >
the dataset's preset > the common default declared on :class:`TrainConfig`. Machine settings
(:data:`MACHINE_FIELDS`) are never inherited from a resumed run: they belong to the machine at hand, not to the run;
nor is ``out``: a resumed run writes beside the checkpoint it continues (see :mod:`~deeplab.engine.run_dir`).
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backbones import check_imagenet_weights, list_backbones, smallest_training_crop, unknown_backbone_message

from ..checkpoint import check_output_stride
from ..errors import UserError
from ..tool_args import check_ranges
from .distributed import DEFAULT_TIMEOUT_S
from .losses import check_loss, parse_loss

__all__ = ["MACHINE_FIELDS", "PRESETS", "RECIPES", "TrainConfig", "changed_settings", "describe_default",
           "resolve_config"]


@dataclass
class TrainConfig:
    """Every setting of a training run, as plain data (saved in checkpoints under ``args``).

    Fields left ``None`` here come from the dataset's preset (:data:`PRESETS`), which :func:`resolve_config`
    fills, or are derived: ``warmup_iters`` from the run's length, ``out`` when the run claims its folder.
    ``init_from`` stays ``None`` unless a run starts from a checkpoint's weights.
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
    min_scale: float = 0.5  # random rescaling of each training image, before the crop
    max_scale: float = 2.0
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
    # Imbalanced data (see RECIPES and the README's section on it).
    loss: str = "ce"
    class_weights: str = "none"
    class_weight_values: list[float] | None = None  # the weights used (see prepare_balance): a resume keeps them
    ohem: float | None = None
    balanced_crops: float = 0.0
    color_jitter: float = 0.0
    any_orientation: bool = False  # images have no up or down: train on every mirror and quarter turn
    copy_paste: float = 0.0
    recipe: str | None = None
    out: str | None = None
    # Machine settings (see MACHINE_FIELDS).
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    device: str = "auto"
    sync_bn: bool = True
    dist_timeout: float = DEFAULT_TIMEOUT_S
    tensorboard: bool = False


MACHINE_FIELDS = ("workers", "device", "sync_bn", "dist_timeout", "tensorboard")

PRESETS: dict[str, dict[str, Any]] = {
    # Demo: 128x128 scenes, so the crop is the whole image; sized to learn visibly in minutes on 2 CPU cores.
    "demo": {"data_root": "data/demo", "iters": 200, "batch_size": 8, "crop_size": 128, "lr": 0.05,
             "val_every": 50, "pretrained_backbone": "none"},
    # Demo with a rare, small class (0.1% of the labelled pixels): the budget of the imbalance study in the README.
    "demo-rare": {"data_root": "data/demo_rare", "iters": 400, "batch_size": 8, "crop_size": 128, "lr": 0.01,
                  "val_every": 100, "pretrained_backbone": "none"},
    # VOC: the DeepLabV3+ recipe (batch 16, crop 512, lr 0.01, 30k steps) from ImageNet weights.
    "voc": {"data_root": "data/voc", "iters": 30000, "batch_size": 16, "crop_size": 512, "lr": 0.01,
            "val_every": 1000, "pretrained_backbone": "imagenet"},
}

#: Named bundles of settings, applied under the flags given with them (measured in the README).
RECIPES: dict[str, dict[str, Any]] = {
    # Rare, small classes: on demo-rare the best and steadiest rare-class IoU of the measured rows (four seeds), with
    # mIoU above plain cross-entropy's (class weights found the rare class more often but painted look-alikes too;
    # rescaling by 0.5-2 shrank the small class below what the decoder resolves and let look-alikes take its size).
    "imbalanced": {"loss": "ce+3*dice", "ohem": 0.1, "balanced_crops": 0.5, "min_scale": 0.75, "max_scale": 1.25},
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
_AT_LEAST_ONE = ("iters", "epochs", "batch_size", "crop_size", "val_every", "val_batch_size")
_AT_LEAST_ZERO = ("lr", "warmup_iters", "seed", "workers", "weight_decay", "backbone_lr_scale")  # lr 0: weights stay
_ABOVE_ZERO = ("dist_timeout", "min_scale", "max_scale")


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
        close = {key: difflib.get_close_matches(key, _FIELDS, n=1) for key in unknown}
        named = [f"{key} (did you mean {close[key][0]}?)" if close[key] else key for key in unknown]
        raise ValueError(f"not training settings: {', '.join(named)}")
    given = {key: _plain_setting(key, value) for key, value in given.items()}
    resumed = resumed or {}
    inherited = {k: v for k, v in resumed.items() if k in _FIELDS and k not in (*MACHINE_FIELDS, "out")}
    dataset = given.get("dataset", inherited.get("dataset", TrainConfig.dataset))
    if dataset not in PRESETS:
        raise UserError(f"--dataset {dataset}: choose one of {', '.join(sorted(PRESETS))}")
    recipe = given.get("recipe")
    if recipe is not None and recipe not in RECIPES:
        raise UserError(f"--recipe {recipe}: choose one of {', '.join(sorted(RECIPES))}")
    recipe_settings = RECIPES[recipe] if recipe is not None else {}
    config = TrainConfig(**{**PRESETS[dataset], **inherited, **recipe_settings, **given, "dataset": dataset})
    if "ohem" not in given and "ce" not in parse_loss(config.loss):
        config.ohem = None  # a recipe's or a resumed run's mining selects cross-entropy pixels; this loss has none
    if not _same_weights(config.class_weights, inherited.get("class_weights")):  # stored values are the saved one's
        config.class_weight_values = None
    if "class_weights" in given and config.class_weights not in ("auto", "none"):
        config.class_weights = os.path.abspath(config.class_weights)  # a file saved absolute: resumable from anywhere
    if config.data_root is not None and ("data_root" in given or "data_root" not in inherited):
        config.data_root = os.path.abspath(config.data_root)  # saved absolute: resumable from anywhere
    if config.backbone not in list_backbones():
        raise UserError(f"--backbone: {unknown_backbone_message(config.backbone)}")
    starts_fresh = not resumed and not config.init_from  # only a fresh run loads ImageNet weights
    if not starts_fresh and str(given.get("pretrained_backbone", "none")).lower() != "none":
        raise UserError(f"--pretrained-backbone {given['pretrained_backbone']}: the backbone's weights come from the "
                        f"checkpoint of --{'init-from' if config.init_from else 'resume'}, which would overwrite these; "
                        "give one of the two")
    if starts_fresh and str(config.pretrained_backbone).lower() == "imagenet":  # before any data is fetched
        check_imagenet_weights(config.backbone)
    if "epochs" in given:  # counted in steps once the split's size is known (see fit)
        config.iters = None
    _check_ranges(config)
    _check_crop_size(config)
    _check_imbalance_settings(config)
    return config


def changed_settings(config: TrainConfig, saved: Mapping[str, Any]) -> list[str]:
    """The settings of ``config`` that differ from a resumed run's ``saved`` ones, as ``--lr 0.05 -> 0.1``: a resume
    continues its run exactly only where none does, so a caller says each (the run's length and machine aside)."""
    aside = {*MACHINE_FIELDS, "out", "iters", "epochs", "class_weight_values"}
    return [f"--{key.replace('_', '-')} {saved[key]} -> {getattr(config, key)}" for key in _FIELDS
            if key not in aside and key in saved and saved[key] != getattr(config, key)]


def _same_weights(setting: str, saved: str | None) -> bool:
    """Whether ``--class-weights`` ``setting`` is the resumed run's ``saved`` one: the same word, or the same file
    (named relative here, or absolute as a run saves it)."""
    if saved is None or {setting, saved} & {"auto", "none"}:
        return setting == saved
    return os.path.abspath(setting) == os.path.abspath(saved)


def _plain_setting(key: str, value: Any) -> Any:
    """``value`` as the plain type of setting ``key`` (numpy numbers as Python ones, paths as strings,
    ``pretrained_backbone=True/False`` as ``imagenet``/``none``), else a UserError naming the flag: the run's
    checkpoints store the settings, and anything but plain data makes them unreadable (``weights_only``)."""
    kinds = set(typing.get_args(_HINTS[key])) - {type(None)} or {_HINTS[key]}
    if key == "pretrained_backbone" and isinstance(value, bool):
        return "imagenet" if value else "none"
    if key == "output_stride":
        check_output_stride(value)
    if str in kinds and isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if bool in kinds and isinstance(value, (bool, np.bool_)):
        return bool(value)
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if int in kinds and isinstance(value, numbers.Integral) and number:
        return int(value)
    if float in kinds and number:
        return float(value)
    if list[float] in kinds and isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) for v in value):
        return [float(v) for v in value]
    wanted = " or ".join(sorted(kind.__name__ for kind in kinds))
    raise UserError(f"--{key.replace('_', '-')} {value!r}: expected {wanted}, not {type(value).__name__}")


def _check_ranges(config: TrainConfig) -> None:
    """Refuse numbers no run can use (a negative learning rate or worker count, NaN), naming the flag."""
    def flag(key: str) -> str:
        return f"--{key.replace('_', '-')}"

    check_ranges({flag(key): getattr(config, key) for key in (*_AT_LEAST_ONE, *_AT_LEAST_ZERO, *_ABOVE_ZERO)},
                 at_least_one=map(flag, _AT_LEAST_ONE), at_least_zero=map(flag, _AT_LEAST_ZERO),
                 above_zero=map(flag, _ABOVE_ZERO))


def _check_crop_size(config: TrainConfig) -> None:
    """Refuse a crop too small for the backbone at its output stride: it leaves a 1x1 map somewhere, on which
    BatchNorm has no spatial values to normalise over (and every ASPP branch sees only its centre tap)."""
    smallest = smallest_training_crop(config.backbone, config.output_stride)
    if config.crop_size < smallest:
        raise UserError(f"--crop-size {config.crop_size}: {config.backbone} at output stride {config.output_stride} "
                        f"needs a crop of at least {smallest} pixels (a smaller one leaves a 1x1 feature map, "
                        "which BatchNorm cannot train on)")


def _check_imbalance_settings(config: TrainConfig) -> None:
    """Refuse an unknown loss, class weights it has no term to apply to, a rescaling range that runs backwards, or
    shares outside [0, 1], before any data is read."""
    terms = check_loss(config.loss, config.ohem)
    if config.class_weights != "none" and not {"ce", "focal"} & set(terms):
        # The region losses count every class once already; the weights would be printed and saved, yet unused.
        raise UserError(f"--class-weights {config.class_weights}: weights scale the pixel terms (ce, focal), and "
                        f"--loss {config.loss} has neither; add one (e.g. ce+dice) or pass --class-weights none")
    if config.min_scale > config.max_scale:
        raise UserError(f"--min-scale {config.min_scale} is above --max-scale {config.max_scale}")
    for key, what in (("balanced_crops", "class-focused crops"), ("copy_paste", "samples given a pasted object"),
                      ("color_jitter", "colour-jittered samples")):
        value = getattr(config, key)
        if not 0.0 <= value <= 1.0:
            raise UserError(f"--{key.replace('_', '-')} {value}: the share of {what} must lie in [0, 1], e.g. 0.5")
