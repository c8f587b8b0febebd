"""DeepLabV3+ semantic segmentation: model assembly, metrics, checkpoints.

Public names load lazily (PEP 562) so that ``backbones`` can import ``deeplab.errors`` without a cycle.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeepLabV3Plus": "model",
    "build_model": "model",
    "ConfusionMatrix": "metrics",
    "segmentation_scores": "metrics",
    "load_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "UserError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
