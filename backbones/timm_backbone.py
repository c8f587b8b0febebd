"""Backbones built from timm models: timm is imported on first use, and ImageNet weights come from timm."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from .base import Backbone

__all__ = ["TimmBackbone", "create_timm_model"]


def create_timm_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model``, importing timm only now: importing ``backbones`` should not cost timm's start-up."""
    import timm

    return timm.create_model(name, **kwargs)


class TimmBackbone(Backbone):
    """A backbone made of timm model ``timm_name``'s modules under timm's names, so timm's state dict loads."""

    #: timm model name whose default pretrained tag gives the ImageNet weights.
    timm_name: ClassVar[str]

    def imagenet_state_dict(self) -> Mapping[str, torch.Tensor]:
        return create_timm_model(self.timm_name, pretrained=True).state_dict()
