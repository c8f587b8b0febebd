"""Segmentation data: images and masks on disk, PASCAL VOC and VOC-format folders, SBD train_aug, the built-in
demo set, transforms. Imports nothing from ``deeplab``: its errors are :class:`DataError` lines naming a file."""
from __future__ import annotations

from .demo import DEMO_CLASSES, DEMO_VARIANTS, ensure_demo_dataset
from .errors import DataError
from .image_files import IGNORE_INDEX, find_images, list_images, read_label_png, read_rgb, save_label_png, voc_palette
from .sbd import convert_sbd, plan_sbd
from .transforms import build_eval_transform, build_train_transform, normalize_image
from .voc import VOC_CLASSES, VOCSegmentation, download_voc, load_class_names, read_class_names

__all__ = [
    "DEMO_CLASSES",
    "DEMO_VARIANTS",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "DataError",
    "VOCSegmentation",
    "build_eval_transform",
    "build_train_transform",
    "convert_sbd",
    "download_voc",
    "ensure_demo_dataset",
    "find_images",
    "list_images",
    "load_class_names",
    "normalize_image",
    "plan_sbd",
    "read_class_names",
    "read_label_png",
    "read_rgb",
    "save_label_png",
    "voc_palette",
]
