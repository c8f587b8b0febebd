"""Segmentation data: PASCAL VOC and VOC-format folders, SBD train_aug, the built-in demo set, transforms."""
from __future__ import annotations

from .demo import DEMO_CLASSES, ensure_demo_dataset
from .sbd import convert_sbd
from .transforms import build_eval_transform, build_train_transform
from .voc import VOC_CLASSES, VOCSegmentation, download_voc, load_class_names

__all__ = [
    "DEMO_CLASSES",
    "VOC_CLASSES",
    "VOCSegmentation",
    "build_eval_transform",
    "build_train_transform",
    "convert_sbd",
    "download_voc",
    "ensure_demo_dataset",
    "load_class_names",
]
