"""DeepLabV3+ semantic segmentation on swappable backbones.

Sub-packages by job: :mod:`deeplab.models` (the network), :mod:`deeplab.engine` (training),
:mod:`deeplab.evaluation` (scores), :mod:`deeplab.inference` (prediction, engines, export); checkpoints and
user-facing errors sit beside them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

# Our data package is the checkout's top-level `datasets`, which is not installed (Hugging Face owns that name in
# site-packages). Say so plainly instead of failing deep inside an import of the wrong package.
_data = importlib.util.find_spec("datasets")
if _data is None or _data.origin is None or not (Path(_data.origin).parent / "image_files.py").is_file():
    raise ImportError(
        "deeplab needs this checkout's `datasets` package: run from the checkout's root or put it first on sys.path "
        f"(found {_data.origin if _data else 'no datasets package'})"
    )

# The network (torchvision, timm) and the evaluation code load on first use, so a prediction from a cached engine
# starts without them.
_LAZY = {
    "ConfusionMatrix": ".evaluation",
    "DeepLabV3Plus": ".models",
    "Predictor": ".inference",
    "build_model": ".models",
    "segmentation_scores": ".evaluation",
}

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = [
    "ConfusionMatrix",
    "DeepLabV3Plus",
    "Predictor",
    "UserError",
    "build_model",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "segmentation_scores",
]


def __dir__() -> list[str]:
    """The module's names with the lazy ones, so a notebook's completion offers them before first use."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
