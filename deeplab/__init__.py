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

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .errors import UserError
from .evaluation import ConfusionMatrix, segmentation_scores
from .inference import Predictor
from .models import DeepLabV3Plus, build_model

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
