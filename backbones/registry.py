"""Name -> builder registry of backbones; one dict, duplicates refused, misspelt names answered with the closest."""
from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, Callable, TypeVar

from .base import OUTPUT_STRIDES, Backbone, WeightsError

__all__ = [
    "FAMILIES",
    "backbones_with_imagenet_weights",
    "build_backbone",
    "check_imagenet_weights",
    "closest_backbones",
    "list_backbones",
    "pretrained_argument",
    "register_backbone",
    "smallest_training_crop",
    "unknown_backbone_message",
]

#: The modules of this package that register backbones on import, one per network family.
FAMILIES = ("blazenet", "inception", "inception_v2", "mobilenetv1", "mobilenetv2", "mobilenetv3", "mobilenetv4",
            "mobilenext", "mobilevit", "shufflenetv1", "shufflenetv2", "xception")

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


def backbones_with_imagenet_weights() -> list[str]:
    """Sorted names of the backbones that declare an upstream source of ImageNet weights."""
    return [name for name in list_backbones() if getattr(_BUILDERS[name], "weights_source", None) is not None]


def check_imagenet_weights(name: str) -> None:
    """Raise a one-line :class:`WeightsError` naming the backbones that have ImageNet weights if ``name`` has none."""
    _import_families()
    if getattr(_BUILDERS.get(name), "weights_source", None) is None:
        raise WeightsError(
            f"{name} has no upstream ImageNet weights: train it from scratch (--pretrained-backbone none, or "
            f"pretrained=False) or pass a weights file; ImageNet weights exist for "
            f"{', '.join(backbones_with_imagenet_weights())}"
        )


def unknown_backbone_message(name: str) -> str:
    """One line for a name that is not registered: the closest registered names first, then all of them."""
    names = list_backbones()
    close = closest_backbones(name)
    hint = f"did you mean {' or '.join(filter(None, [', '.join(close[:-1]), close[-1]]))}? " if close else ""
    return f"unknown backbone {name!r}; {hint}choose one of: {', '.join(names)}"


def closest_backbones(name: str, n: int = 4) -> list[str]:
    """Up to ``n`` registered names like ``name``, ignoring case and separators: those it begins, then difflib's."""
    squashed = {_squash(known): known for known in list_backbones()}
    key = _squash(name)
    found = [known for flat, known in squashed.items() if key and flat.startswith(key)]
    found += [squashed[flat] for flat in difflib.get_close_matches(key, squashed, n=n, cutoff=0.75)]
    return list(dict.fromkeys(found))[:n]


def _squash(name: str) -> str:
    return "".join(c for c in str(name).lower() if c.isalnum())


def build_backbone(
    name: str, *, output_stride: int = 16, pretrained: bool | str | Path = False, **kwargs: Any
) -> Backbone:
    """Build backbone ``name`` at ``output_stride``; ``pretrained`` is False, True (ImageNet) or a weights file, and
    ``"imagenet"``/``"none"`` as on the command line (see :func:`pretrained_argument`)."""
    pretrained = pretrained_argument(pretrained) if isinstance(pretrained, str) else pretrained
    _import_families()
    if name not in _BUILDERS:
        raise ValueError(unknown_backbone_message(name))
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if pretrained is True:
        check_imagenet_weights(name)
    # A numpy integer would reach torchvision's conv blocks as a dilation they take for a sequence.
    backbone = _BUILDERS[name](output_stride=int(output_stride), **kwargs)
    if pretrained is not False and pretrained is not None:
        backbone.load_pretrained(pretrained)
    return backbone


def pretrained_argument(value: str) -> bool | str:
    """``imagenet`` -> True, ``none`` -> False (any case), anything else is a weights file path."""
    return {"imagenet": True, "none": False}.get(value.lower(), value)


def smallest_training_crop(name: str, output_stride: int) -> int:
    """The smallest crop side backbone ``name`` trains on at ``output_stride`` (see
    :meth:`Backbone.smallest_training_crop`)."""
    _import_families()
    return getattr(_BUILDERS[name], "smallest_training_crop", Backbone.smallest_training_crop)(output_stride)


def _import_families() -> None:
    """Import every family module once (each registers its names); later calls cost a dict lookup each."""
    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")
