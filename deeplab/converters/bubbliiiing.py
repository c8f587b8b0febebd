"""bubbliiiing/deeplabv3-plus-pytorch: ``DeepLab(backbone="mobilenet")`` checkpoints (``deeplab_mobilenetv2.pth``).

Their network, as far as numbers go: torchvision-style MobileNetV2 whose block that trades its stride for
dilation keeps the previous dilation; ASPP and decoder convs carry a bias before BatchNorm (folded here into the
BatchNorm's running mean, exactly); plain 3x3 convs; the decoder concatenates [ASPP, low-level] and has two 3x3
convs (dropout 0.5 and 0.1 in training); both bilinear upsamplings use ``align_corners=True``; inputs are
RGB / 255 with no mean or std.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Project, StateDict, fold_conv_bias, rename_keys

__all__ = ["PROJECT"]

# torchvision's inverted residual nests its conv-BN-ReLU6 pairs: (pw, dw) -> conv.0 / conv.1, then conv.2, conv.3.
_BLOCK_RULES = (
    (r"^backbone\.features\.1\.conv\.0\.", "backbone.features.1.conv.0.0."),
    (r"^backbone\.features\.1\.conv\.1\.", "backbone.features.1.conv.0.1."),
    (r"^backbone\.features\.1\.conv\.3\.", "backbone.features.1.conv.1."),
    (r"^backbone\.features\.1\.conv\.4\.", "backbone.features.1.conv.2."),
    (r"^backbone\.features\.(\d+)\.conv\.0\.", r"backbone.features.\1.conv.0.0."),
    (r"^backbone\.features\.(\d+)\.conv\.1\.", r"backbone.features.\1.conv.0.1."),
    (r"^backbone\.features\.(\d+)\.conv\.3\.", r"backbone.features.\1.conv.1.0."),
    (r"^backbone\.features\.(\d+)\.conv\.4\.", r"backbone.features.\1.conv.1.1."),
    (r"^backbone\.features\.(\d+)\.conv\.6\.", r"backbone.features.\1.conv.2."),
    (r"^backbone\.features\.(\d+)\.conv\.7\.", r"backbone.features.\1.conv.3."),
    (r"^backbone\.features\.0\.", "backbone.features.0."),
)
_HEAD_RULES = (
    (r"^aspp\.branch1\.", "aspp.branches.0."),
    (r"^aspp\.branch2\.", "aspp.branches.1."),
    (r"^aspp\.branch3\.", "aspp.branches.2."),
    (r"^aspp\.branch4\.", "aspp.branches.3."),
    (r"^aspp\.branch5_conv\.", "aspp.branches.4.conv."),
    (r"^aspp\.branch5_bn\.", "aspp.branches.4.bn."),
    (r"^aspp\.conv_cat\.", "aspp.project.0."),
    (r"^shortcut_conv\.", "decoder.low_level_project."),
    (r"^cat_conv\.([01])\.", r"decoder.fuse.0.\1."),
    (r"^cat_conv\.4\.", "decoder.fuse.1.0."),
    (r"^cat_conv\.5\.", "decoder.fuse.1.1."),
    (r"^cls_conv\.", "decoder.classifier."),
)
# (conv, BatchNorm) pairs whose conv has a bias, in the project's names.
_BIASED = tuple((f"aspp.branch{i}.0", f"aspp.branch{i}.1") for i in range(1, 5)) + (
    ("aspp.branch5_conv", "aspp.branch5_bn"), ("aspp.conv_cat.0", "aspp.conv_cat.1"),
    ("shortcut_conv.0", "shortcut_conv.1"), ("cat_conv.0", "cat_conv.1"), ("cat_conv.4", "cat_conv.5"),
)


def _owns(state: StateDict) -> bool:
    return any(k.startswith("aspp.branch") for k in state) and any(k.startswith("cat_conv.") for k in state)


def _unsupported(state: StateDict) -> str | None:
    if not any(k.startswith("backbone.features.") for k in state):
        return "a DeepLabV3+ Xception model" if any(k.startswith("backbone.block") for k in state) else (
            "a DeepLabV3+ model on another backbone")
    return None


def _num_classes(state: StateDict) -> int:
    return int(state["cls_conv.weight"].shape[0])


def _model_config(num_classes: int, output_stride: int) -> dict[str, Any]:
    return {
        "backbone": "mobilenetv2", "num_classes": num_classes, "output_stride": output_stride,
        "separable": False, "decoder_convs": 2, "low_level_first": False, "align_corners": True,
        "aspp_dropout": 0.0, "decoder_dropouts": [0.5, 0.1], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
        "dilate_strided_block": False,
    }


def _convert(state: StateDict) -> tuple[dict[str, torch.Tensor], list[str]]:
    folded = dict(state)
    for conv, bn in _BIASED:
        fold_conv_bias(folded, conv, bn)
    return rename_keys(folded, _BLOCK_RULES + _HEAD_RULES)


PROJECT = Project(
    name="bubbliiiing",
    title="bubbliiiing/deeplabv3-plus-pytorch",
    architecture='DeepLabV3+ MobileNetV2 (DeepLab(backbone="mobilenet"))',
    reported="VOC 2012 val mIoU 72.59 (OS16, images letterboxed to 512x512)",
    owns=_owns,
    unsupported=_unsupported,
    num_classes=_num_classes,
    model_config=_model_config,
    convert=_convert,
)
