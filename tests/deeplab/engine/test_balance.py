"""What a run does about imbalance, from its settings and the split: copy-paste needs an object to paste, and
class-balanced crops a labelled pixel to crop around."""
from __future__ import annotations

import numpy as np
import pytest

from datasets import VOCSegmentation
from datasets.class_stats import class_pixel_counts
from deeplab.engine import balance, resolve_config
from deeplab.engine.balance import prepare_balance
from deeplab.errors import UserError

CLASSES = ["background", "thing"]


def _counts(root):
    return class_pixel_counts(VOCSegmentation(root, split="train"))


def _config(root, **flags):
    return resolve_config({"dataset": "voc", "data_root": str(root), "workers": 0, "pretrained_backbone": "none",
                           **flags})


def test_copy_paste_on_a_split_of_background_only_is_one_line(tmp_path, make_voc_folder):
    make_voc_folder(tmp_path, {"a": np.zeros((8, 8), np.uint8), "b": np.zeros((8, 8), np.uint8)}, classes=CLASSES)
    with pytest.raises(UserError, match="^--copy-paste 0.5: split train holds no object to paste, only background$"):
        prepare_balance(_config(tmp_path, copy_paste=0.5), _counts(tmp_path), CLASSES,
                        announce=False)


def test_balanced_crops_on_a_split_of_void_only_is_one_line(tmp_path, make_voc_folder):
    make_voc_folder(tmp_path, {"a": np.full((8, 8), 255, np.uint8)}, classes=CLASSES)
    with pytest.raises(UserError, match="^--balanced-crops 0.5: split train holds no labelled pixel to crop around$"):
        prepare_balance(_config(tmp_path, balanced_crops=0.5), _counts(tmp_path), CLASSES,
                        announce=False)


def test_copy_paste_draws_only_the_object_classes(tmp_path, make_voc_folder):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    make_voc_folder(tmp_path, {"a": mask, "b": np.zeros((8, 8), np.uint8)}, classes=CLASSES)
    _, focus, paste = prepare_balance(_config(tmp_path, copy_paste=0.5), _counts(tmp_path),
                                      CLASSES, announce=False)
    assert focus is None and paste.share == 0.5
    assert paste.class_probs.tolist() == [0.0, 1.0] and paste.images_by_class[1].tolist() == [0]


def test_classes_absent_from_the_split_are_named_in_one_line(capsys):
    balance._warn_absent(["bg", "a", "b", "c"], np.array([9, 0, 3, 0]), split="train")
    assert capsys.readouterr().err == "warning: classes a, c never occur in split train; their weights are set to 10\n"
    balance._warn_absent(["bg", "a"], np.array([9, 0]), split="train")
    assert capsys.readouterr().err == "warning: class a never occurs in split train; its weight is set to 10\n"
