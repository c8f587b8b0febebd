"""Feature extractors for DeepLabV3+ behind one contract (see ``backbones.base``) and a name registry.

The contract and the registry import torch only; the family modules (torchvision's and timm's networks) are
imported by the registry the first time a backbone is listed or built, so code that only needs
:class:`WeightsError` or :class:`FeatureInfo` (error reporting, a prediction from a prepared engine) starts fast.
"""
from .base import Backbone, FeatureInfo, SequentialBackbone, WeightsError, dilate_for_output_stride
from .registry import (
    FAMILIES, backbones_with_imagenet_weights, build_backbone, check_imagenet_weights, list_backbones,
    pretrained_argument, register_backbone, smallest_training_crop, unknown_backbone_message,
)

__all__ = [
    "FAMILIES",
    "Backbone",
    "FeatureInfo",
    "SequentialBackbone",
    "WeightsError",
    "backbones_with_imagenet_weights",
    "build_backbone",
    "check_imagenet_weights",
    "dilate_for_output_stride",
    "list_backbones",
    "pretrained_argument",
    "register_backbone",
    "smallest_training_crop",
    "unknown_backbone_message",
]
