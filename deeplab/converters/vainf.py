"""VainF/DeepLabV3Plus-Pytorch: ``deeplabv3plus_mobilenet`` checkpoints (``best_deeplabv3plus_mobilenet_*.pth``).

Their network, as far as numbers go: a MobileNetV2 whose stem conv is unpadded and whose inverted residuals pad
their input before the expansion conv; the block that trades its stride for dilation keeps the previous dilation;
ASPP with plain 3x3 convs and dropout 0.1; a decoder that concatenates [low-level, ASPP] and has one 3x3 conv;
bilinear upsampling with ``align_corners=False``; inputs normalised with ImageNet mean and std.
"""
from __future__ import annotations

from typing import Any

from backbones.base import IMAGENET_MEAN, IMAGENET_STD

from .base import Project, StateDict, rename_keys

__all__ = ["PROJECT"]

_CLASSIFIER = "classifier.classifier.3.weight"
_RULES = (
    (r"^backbone\.(low|high)_level_features\.(\d+)\.", r"backbone.features.\2."),
    (r"^classifier\.project\.", "decoder.low_level_project."),
    (r"^classifier\.aspp\.convs\.([0-3])\.", r"aspp.branches.\1."),
    (r"^classifier\.aspp\.convs\.4\.1\.", "aspp.branches.4.conv."),
    (r"^classifier\.aspp\.convs\.4\.2\.", "aspp.branches.4.bn."),
    (r"^classifier\.aspp\.project\.", "aspp.project.0."),
    (r"^classifier\.classifier\.([01])\.", r"decoder.fuse.0.\1."),
    (r"^classifier\.classifier\.3\.", "decoder.classifier."),
)


def _owns(state: StateDict) -> bool:
    """Its heads (DeepLabV3's and V3+'s) keep their last layers in ``classifier.classifier``; torchvision's
    segmentation models also pair ``backbone.`` with ``classifier.``, but not with that."""
    return any(k.startswith("backbone.") for k in state) and any(k.startswith("classifier.classifier.") for k in state)


def _unsupported(state: StateDict) -> str | None:
    """The variant in words when it is not the plain-conv DeepLabV3+ MobileNetV2 we import."""
    if not any(k.startswith("classifier.project.") for k in state):
        return "a DeepLabV3 model (no decoder)"
    if not any(k.startswith("backbone.low_level_features.") for k in state):
        if any(k.startswith("backbone.layer4.") for k in state):
            return "a DeepLabV3+ ResNet model"
        if any(k.startswith(("backbone.stage4.", "backbone.transition")) for k in state):
            return "a DeepLabV3+ HRNetV2 model"
        return "a DeepLabV3+ model on another backbone"
    if any(".body." in k for k in state):
        return "a DeepLabV3+ MobileNetV2 with separable head convs (--separable_conv)"
    return None


def _num_classes(state: StateDict) -> int:
    return int(state[_CLASSIFIER].shape[0])


def _model_config(num_classes: int, output_stride: int) -> dict[str, Any]:
    return {
        "backbone": "mobilenetv2", "num_classes": num_classes, "output_stride": output_stride,
        "separable": False, "decoder_convs": 1, "low_level_first": True, "align_corners": False,
        "aspp_dropout": 0.1, "decoder_dropouts": [0.0], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "dilate_strided_block": False, "pad_block_input": True,
    }


PROJECT = Project(
    name="vainf",
    title="VainF/DeepLabV3Plus-Pytorch",
    architecture="DeepLabV3+ MobileNetV2 (deeplabv3plus_mobilenet)",
    reported="VOC 2012 val mIoU 0.711 (OS16, 513x513 centre crops); Cityscapes file: val mIoU 0.721",
    owns=_owns,
    unsupported=_unsupported,
    num_classes=_num_classes,
    model_config=_model_config,
    convert=lambda state: rename_keys(state, _RULES),
)
