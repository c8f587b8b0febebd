"""Training settings: flags > resumed run > dataset preset > common defaults; machine settings never inherited."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deeplab import save_checkpoint
from deeplab.benchmark.recipes import ROWS
from deeplab.checkpoint import read_plain_data
from deeplab.engine.config import MACHINE_FIELDS, PRESETS, RECIPES, TrainConfig, describe_default, resolve_config
from deeplab.errors import UserError


def test_settings_prefer_flags_then_the_resumed_run_then_dataset_defaults():
    saved = {"dataset": "demo", "iters": 77, "lr": 0.3, "workers": 9, "out": "runs/x"}
    c = resolve_config({"lr": 0.1, "batch_size": None}, saved)
    assert (c.lr, c.iters, c.batch_size, c.crop_size) == (0.1, 77, 8, 128)
    assert c.workers == TrainConfig().workers  # machine settings are never inherited
    assert c.out is None  # nor the folder: a resumed run writes beside its checkpoint (the run folder decides)
    assert resolve_config({"out": "elsewhere"}, saved).out == "elsewhere"
    fresh = resolve_config({"backbone": "mobilenetv2", "output_stride": 8}, {})
    assert fresh.dataset == "voc" and fresh.pretrained_backbone == "imagenet" and fresh.crop_size == 512
    assert resolve_config({"epochs": 3}, saved).iters is None
    with pytest.raises(UserError, match="--batch-size"):
        resolve_config({"batch_size": 0}, {})


@pytest.mark.parametrize(("flag", "value"), [("workers", -1), ("lr", -1.0), ("lr", float("nan")),
                                             ("seed", -3), ("warmup_iters", -1), ("weight_decay", float("inf")),
                                             ("dist_timeout", 0.0), ("val_batch_size", 0)])
def test_numbers_no_run_can_use_are_refused_naming_the_flag(flag, value):
    with pytest.raises(UserError, match=f"--{flag.replace('_', '-')}: must be"):
        resolve_config({"dataset": "demo", flag: value})
    assert resolve_config({"dataset": "demo", "workers": 0, "warmup_iters": 0, "lr": 0.0}).workers == 0


@pytest.mark.parametrize("start", ["resume", "init-from"])
def test_backbone_weights_beside_a_checkpoint_that_overwrites_them_are_refused(start):
    flags, saved = {"pretrained_backbone": "mine.pth"}, {"dataset": "demo", "backbone": "mobilenetv2"}
    if start == "init-from":
        flags["init_from"] = "other/best.pt"
    with pytest.raises(UserError, match=f"--pretrained-backbone mine.pth: .* checkpoint of --{start}, which would"):
        resolve_config(flags, saved)
    assert resolve_config({**flags, "pretrained_backbone": "none"}, saved).pretrained_backbone == "none"


def test_every_machine_field_is_left_out_of_a_resume():
    saved = {"dataset": "demo", "workers": 7, "device": "cuda", "sync_bn": False, "dist_timeout": 1.0}
    config = resolve_config({}, saved)
    for name in MACHINE_FIELDS:
        assert getattr(config, name) == getattr(TrainConfig(), name), name


def test_old_checkpoint_keys_are_ignored_and_unknown_flags_refused():
    config = resolve_config({}, {"dataset": "demo", "no_sync_bn": True, "retired_setting": 1})
    assert config.dataset == "demo" and config.sync_bn is True
    with pytest.raises(ValueError, match=r"^not training settings: bogus$"):
        resolve_config({"bogus": 1})
    with pytest.raises(ValueError, match=r"^not training settings: iter \(did you mean iters\?\), learning_rate$"):
        resolve_config({"iter": 100, "learning_rate": 0.1})


def test_every_preset_value_is_a_setting_and_fills_every_blank():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    optional = {"out", "warmup_iters", "epochs", "init_from", "ohem", "recipe", "class_weight_values"}
    blanks = {f.name for f in dataclasses.fields(TrainConfig) if f.default is None} - optional
    for dataset, preset in PRESETS.items():
        assert set(preset) <= names, dataset
        config = resolve_config({"dataset": dataset})
        assert all(getattr(config, name) is not None for name in blanks), dataset


def test_help_defaults_come_from_the_presets():
    assert describe_default("iters") == ", ".join(f"{name} {preset['iters']}" for name, preset in PRESETS.items())
    assert describe_default("iters").startswith(f"demo {PRESETS['demo']['iters']}, ")
    assert describe_default("weight_decay") == str(TrainConfig().weight_decay)


def test_a_recipe_fills_its_settings_under_the_flags_and_is_saved():
    config = resolve_config({"dataset": "demo", "recipe": "imbalanced", "ohem": 0.5})
    for name, value in RECIPES["imbalanced"].items():
        assert getattr(config, name) == (0.5 if name == "ohem" else value), name
    assert config.recipe == "imbalanced"
    resumed = resolve_config({}, dataclasses.asdict(config))  # the saved values, not the recipe, come back
    assert (resumed.ohem, resumed.loss) == (0.5, config.loss)
    with pytest.raises(UserError, match="--recipe fast: choose one of imbalanced"):
        resolve_config({"recipe": "fast"})


def test_the_recipes_mining_applies_only_to_a_loss_with_cross_entropy():
    config = resolve_config({"dataset": "demo", "recipe": "imbalanced", "loss": "focal+dice"})
    assert config.ohem is None and config.balanced_crops == RECIPES["imbalanced"]["balanced_crops"]
    resumed = resolve_config({}, dataclasses.asdict(config))
    assert dataclasses.asdict(resumed) == dataclasses.asdict(config)
    assert resolve_config({"dataset": "demo", "recipe": "imbalanced", "loss": "ce+dice"}).ohem == 0.1
    with pytest.raises(UserError, match=r"^--ohem 1.0: .*'ce' term"):  # mining the user asked for still needs ce
        resolve_config({"dataset": "demo", "recipe": "imbalanced", "loss": "focal+dice", "ohem": 1.0})


def test_a_resumed_runs_mining_is_dropped_with_a_loss_without_cross_entropy():
    saved = dataclasses.asdict(resolve_config({"dataset": "demo", "recipe": "imbalanced"}))
    assert resolve_config({"loss": "focal+dice"}, saved).ohem is None  # else refused, and no flag turns it off
    assert resolve_config({"loss": "ce+dice"}, saved).ohem == saved["ohem"]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_a_crop_no_larger_than_the_output_stride_is_refused(output_stride):
    flags = {"dataset": "demo", "output_stride": output_stride, "batch_size": 1}
    assert resolve_config({**flags, "crop_size": output_stride + 1}).crop_size == output_stride + 1
    with pytest.raises(UserError, match=rf"^--crop-size {output_stride}: mobilenetv2 at output stride "
                                        rf"{output_stride} needs a crop of at least {output_stride + 1} pixels"):
        resolve_config({**flags, "crop_size": output_stride})


@pytest.mark.parametrize(("output_stride", "smallest"), [(8, 17), (16, 33), (32, 33)])
def test_a_hybrid_mobilenetv4_needs_twice_the_stride(output_stride, smallest):
    """Its attention halves keys and values once more at stride 16."""
    flags = {"dataset": "demo", "backbone": "mobilenetv4_hybrid_medium", "output_stride": output_stride}
    assert resolve_config({**flags, "crop_size": smallest}).crop_size == smallest
    with pytest.raises(UserError, match=rf"^--crop-size {smallest - 1}: mobilenetv4_hybrid_medium at output "
                                        rf"stride {output_stride} needs a crop of at least {smallest} pixels"):
        resolve_config({**flags, "crop_size": smallest - 1})


def test_stored_class_weights_follow_only_their_own_setting():
    saved = {"dataset": "demo", "class_weights": "w.txt", "class_weight_values": [1.0, 2.0]}
    assert resolve_config({}, saved).class_weight_values == [1.0, 2.0]
    assert resolve_config({"class_weights": "w.txt"}, saved).class_weight_values == [1.0, 2.0]
    assert resolve_config({"class_weights": "other.txt"}, saved).class_weight_values is None


def test_a_weights_file_is_saved_absolute_so_a_resume_reads_it_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve_config({"dataset": "demo", "class_weights": "w.txt"})
    assert config.class_weights == str(tmp_path / "w.txt")
    saved = {**dataclasses.asdict(config), "class_weight_values": [1.0, 2.0]}
    monkeypatch.chdir(tmp_path.parent)
    assert resolve_config({}, saved).class_weights == str(tmp_path / "w.txt")
    assert resolve_config({"class_weights": str(tmp_path / "w.txt")}, saved).class_weight_values == [1.0, 2.0]
    assert resolve_config({"class_weights": "auto"}, saved).class_weight_values is None


def test_the_imbalanced_recipe_is_a_measured_row():
    assert RECIPES["imbalanced"] in ROWS.values()


@pytest.mark.parametrize("flags, message", [
    ({"loss": "cross_entropy"}, r"--loss cross_entropy: unknown term 'cross_entropy'; choose one of ce, focal"),
    ({"ohem": 0.0}, r"--ohem 0.0: .*\(0, 1\]"),
    ({"loss": "dice", "ohem": 0.25}, r"--ohem 0.25: .*'ce' term"),
    ({"loss": "dice+lovasz", "class_weights": "auto"}, r"^--class-weights auto: .*--loss dice\+lovasz has neither"),
    ({"balanced_crops": 1.5}, r"--balanced-crops 1.5: .*\[0, 1\]"),
    ({"color_jitter": -0.5}, r"--color-jitter -0.5: .*\[0, 1\]"),
    ({"copy_paste": float("nan")}, r"--copy-paste nan: .*\[0, 1\]"),
    ({"min_scale": 1.5, "max_scale": 1.25}, r"--min-scale 1.5 is above --max-scale 1.25"),
    ({"min_scale": 0.0}, r"--min-scale: must be above 0, got 0.0"),
])
def test_bad_imbalance_settings_are_refused_before_any_data(flags, message):
    with pytest.raises(UserError, match=message):
        resolve_config({"dataset": "demo", **flags})


def test_numpy_numbers_and_paths_become_plain_settings_a_checkpoint_can_hold(tmp_path):
    given = {"dataset": "demo", "lr": np.logspace(-3, -1, 3)[1], "batch_size": np.int64(4),
             "output_stride": np.int64(8), "init_from": tmp_path / "best.pt", "data_root": tmp_path, "freeze_bn": np.bool_(True),
             "pretrained_backbone": False}
    config = resolve_config(given)
    assert (config.lr, config.batch_size, config.output_stride) == (0.01, 4, 8)
    assert (config.init_from, config.pretrained_backbone, config.freeze_bn) == (str(tmp_path / "best.pt"), "none", True)
    save_checkpoint({"args": dataclasses.asdict(config)}, tmp_path / "args.pt")
    assert read_plain_data(tmp_path / "args.pt")["args"] == dataclasses.asdict(config)  # weights_only reads it


@pytest.mark.parametrize("flags, message", [
    ({"iters": 100.5}, r"^--iters 100.5: expected int, not float$"),
    ({"lr": "0.01"}, r"^--lr '0.01': expected float, not str$"),
    ({"freeze_bn": "no"}, r"^--freeze-bn 'no': expected bool, not str$"),
    ({"output_stride": 12}, r"^--output-stride 12: choose one of 8, 16, 32$"),
])
def test_settings_of_the_wrong_type_are_refused_naming_the_flag(flags, message):
    with pytest.raises(UserError, match=message):
        resolve_config({"dataset": "demo", **flags})
