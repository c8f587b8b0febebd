"""Prediction: the :class:`Predictor` (normalise, resize, engine, argmax), engines (PyTorch, ONNX Runtime, OpenVINO;
fp32, bf16, int8), the on-disk cache of prepared engines, int8 calibration images, ONNX export, BN folding,
test-time augmentation, overlays and the files prediction writes."""
from __future__ import annotations

from .engines import ENGINES, create_engine, resolve_engine
from .overlay import overlay
from .predictor import Prediction, Predictor, shrink_to, upsample_argmax
from .tta import Engine, class_scores

__all__ = [
    "ENGINES",
    "Engine",
    "Prediction",
    "Predictor",
    "class_scores",
    "create_engine",
    "overlay",
    "resolve_engine",
    "shrink_to",
    "upsample_argmax",
]
