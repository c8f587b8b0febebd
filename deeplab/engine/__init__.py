"""Training: the typed run config and its presets, :func:`fit`, the loop, data loaders, losses, schedules,
run state, the metrics log, multi-process helpers and freezing."""
from __future__ import annotations

from .config import PRESETS, RECIPES, TrainConfig, describe_default, resolve_config
from .fit import fit
from .loop import AMP_MODES, TrainResult, train

__all__ = ["AMP_MODES", "PRESETS", "RECIPES", "TrainConfig", "TrainResult", "describe_default", "fit", "resolve_config",
           "train"]
