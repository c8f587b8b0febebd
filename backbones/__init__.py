"""Feature extractors for DeepLabV3+ behind one contract (see ``backbones.base``) and a name registry."""
from .base import Backbone, FeatureInfo, SequentialBackbone, WeightsError, dilate_for_output_stride
from .registry import build_backbone, list_backbones, register_backbone

# Each family module registers its names on import.
from . import mobilenetv1, mobilenetv2, mobilenetv3, mobilenext, shufflenetv2, xception  # noqa: E402,F401  isort: skip

__all__ = [
    "Backbone",
    "FeatureInfo",
    "SequentialBackbone",
    "WeightsError",
    "build_backbone",
    "dilate_for_output_stride",
    "list_backbones",
    "register_backbone",
]
