"""DeepLabV3+ semantic segmentation on swappable backbones.

Sub-packages by job: :mod:`deeplab.models` (the network), :mod:`deeplab.engine` (training),
:mod:`deeplab.evaluation` (scores), :mod:`deeplab.inference` (prediction, engines, export); checkpoints and
user-facing errors sit beside them.
"""
from __future__ import annotations

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
