"""Training settings: flags > resumed run > dataset preset > common defaults; machine settings never inherited."""
from __future__ import annotations

import dataclasses

import pytest

from deeplab.engine.config import MACHINE_FIELDS, PRESETS, TrainConfig, describe_default, resolve_config
from deeplab.errors import UserError


def test_settings_prefer_flags_then_the_resumed_run_then_dataset_defaults():
    saved = {"dataset": "demo", "iters": 77, "lr": 0.3, "workers": 9, "out": "runs/x"}
    c = resolve_config({"lr": 0.1, "batch_size": None}, saved)
    assert (c.lr, c.iters, c.batch_size, c.crop_size, c.out) == (0.1, 77, 8, 128, "runs/x")
    assert c.workers == TrainConfig().workers  # machine settings are never inherited
    fresh = resolve_config({"backbone": "mobilenetv2", "output_stride": 8}, {})
    assert fresh.dataset == "voc" and fresh.pretrained_backbone == "imagenet" and fresh.crop_size == 512
    assert fresh.out == "runs/voc_mobilenetv2_os8"
    assert resolve_config({"epochs": 3}, saved).iters is None
    with pytest.raises(UserError, match="--batch-size"):
        resolve_config({"batch_size": 0}, {})


def test_every_machine_field_is_left_out_of_a_resume():
    saved = {"dataset": "demo", "workers": 7, "device": "cuda", "sync_bn": False, "dist_timeout": 1.0}
    config = resolve_config({}, saved)
    for name in MACHINE_FIELDS:
        assert getattr(config, name) == getattr(TrainConfig(), name), name


def test_old_checkpoint_keys_are_ignored_and_unknown_flags_refused():
    config = resolve_config({}, {"dataset": "demo", "no_sync_bn": True, "retired_setting": 1})
    assert config.dataset == "demo" and config.sync_bn is True
    with pytest.raises(ValueError, match="not training settings: bogus"):
        resolve_config({"bogus": 1})


def test_every_preset_value_is_a_setting_and_fills_every_blank():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    optional = {"out", "warmup_iters", "epochs", "init_from"}
    blanks = {f.name for f in dataclasses.fields(TrainConfig) if f.default is None} - optional
    for dataset, preset in PRESETS.items():
        assert set(preset) <= names, dataset
        config = resolve_config({"dataset": dataset})
        assert all(getattr(config, name) is not None for name in blanks), dataset


def test_help_defaults_come_from_the_presets():
    assert describe_default("iters") == f"demo {PRESETS['demo']['iters']}, voc {PRESETS['voc']['iters']}"
    assert describe_default("weight_decay") == str(TrainConfig().weight_decay)
