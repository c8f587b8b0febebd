"""Name -> builder registry of backbones; one dict, duplicates refused."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, TypeVar

from .base import OUTPUT_STRIDES, Backbone

__all__ = ["FAMILIES", "build_backbone", "list_backbones", "register_backbone"]

#: The modules of this package that register backbones on import, one per network family.
FAMILIES = ("mobilenetv1", "mobilenetv2", "mobilenetv3", "mobilenext", "shufflenetv2", "xception")

_BUILDERS: dict[str, Callable[..., Backbone]] = {}
Builder = TypeVar("Builder", bound=Callable[..., Backbone])


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Register a builder ``f(*, output_stride, **kwargs) -> Backbone`` under ``name``; a taken name raises."""

    def decorator(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"backbone {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorator


def list_backbones() -> list[str]:
    """Sorted names of every registered backbone."""
    _import_families()
    return sorted(_BUILDERS)


def build_backbone(
    name: str, *, output_stride: int = 16, pretrained: bool | str | Path = False, **kwargs: Any
) -> Backbone:
    """Build backbone ``name`` at ``output_stride``; ``pretrained`` is False, True (ImageNet) or a weights file."""
    _import_families()
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    backbone = _BUILDERS[name](output_stride=output_stride, **kwargs)
    if pretrained is not False and pretrained is not None:
        backbone.load_pretrained(pretrained)
    return backbone


def _import_families() -> None:
    """Import every family module once (each registers its names); later calls cost a dict lookup each."""
    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")
