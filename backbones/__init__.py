"""Feature extractors for DeepLabV3+ behind one contract (see ``backbones.base``) and a name registry."""
from .base import Backbone, FeatureInfo, SequentialBackbone, WeightsError, dilate_for_output_stride
from .registry import (
    backbones_with_imagenet_weights, build_backbone, check_imagenet_weights, list_backbones, register_backbone,
    unknown_backbone_message,
)

# Each family module registers its names on import.
from . import (  # noqa: E402,F401  isort: skip
    blazenet, inception, inception_v2, mobilenetv1, mobilenetv2, mobilenetv3, mobilenetv4,
    mobilenext, mobilevit, shufflenetv1, shufflenetv2, xception,
)

__all__ = [
    "Backbone",
    "FeatureInfo",
    "SequentialBackbone",
    "WeightsError",
    "backbones_with_imagenet_weights",
    "build_backbone",
    "check_imagenet_weights",
    "dilate_for_output_stride",
    "list_backbones",
    "register_backbone",
    "unknown_backbone_message",
]
