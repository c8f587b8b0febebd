"""Feature extractors for DeepLabV3+ behind one contract (see ``backbones.base``) and a name registry."""
from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .registry import build_backbone, list_backbones, register_backbone

# Each family module registers its names on import.
from . import mobilenetv2  # noqa: E402,F401  isort: skip

__all__ = [
    "Backbone",
    "FeatureInfo",
    "build_backbone",
    "dilate_for_output_stride",
    "list_backbones",
    "register_backbone",
]
