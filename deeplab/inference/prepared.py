"""A checkpoint's engine, prepared once and reused: the exported, converted or calibrated model is kept in the
engine cache (:mod:`.cache`), so a later run with the same checkpoint loads it without rebuilding the PyTorch
model, exporting or calibrating, and without importing torchvision, timm, ONNX or NNCF.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError
from .cache import CacheKey, EngineCache, file_sha256
from .calibration import Calibration
from .engines import SPECS, artefact_versions, create_engine, load_artefacts, resolve_engine, write_artefacts
from .tta import Engine

__all__ = ["SHAPE_POLICY", "checkpoint_engine"]

#: Every engine keeps height and width dynamic: on OpenVINO a static 512x512 model was no faster (within noise).
SHAPE_POLICY = "dynamic"


def checkpoint_engine(
    path: str | Path,
    ckpt: dict[str, Any],
    model: Callable[[], torch.nn.Module],
    *,
    engine: str,
    device: torch.device,
    calibration: Calibration | None,
    prepare: Callable[[np.ndarray], torch.Tensor],
    max_size: int | None,
    variant: str | None = None,
) -> Engine:
    """The engine for checkpoint ``path`` (read as ``ckpt``), from the cache when a valid entry exists.

    ``model()`` rebuilds the PyTorch model (called only when something must be built); ``variant`` names how it
    differs from the checkpoint's own config (e.g. another output stride). int8 engines calibrate on
    ``calibration``'s images made into inputs by ``prepare``, the Predictor's own preprocessing at ``max_size``.
    """
    try:
        engine = resolve_engine(engine, device)
    except ValueError as exc:  # an engine that does not fit this device or is not installed
        raise UserError(f"--engine {engine}: {exc}") from None
    spec = SPECS[engine]
    if spec.runtime == "torch":
        return create_engine(model(), engine=engine, device=device)
    if spec.calibrated and calibration is None:
        raise UserError(f"--engine {engine}: needs calibration images; pass --calibration DIR (the checkpoint's "
                        "training data is not on this machine)")
    sha256 = file_sha256(path)
    key = CacheKey(sha256, engine, spec.precision, SHAPE_POLICY, artefact_versions(engine),
                   calibration.digest(max_size) if spec.calibrated else None, variant)
    cache = EngineCache(path, sha256)
    entry = cache.find(key)
    if entry is not None:
        return load_artefacts(engine, entry)
    network = model()
    batches = None
    if spec.calibrated:
        batches = calibration.batches(prepare)
        print(f"calibrating {engine} on {len(batches)} images from {calibration.source} "
              "(once: the result is cached)", file=sys.stderr)
    with cache.build(key, lambda folder: write_artefacts(network, engine, folder, batches)) as entry:
        return load_artefacts(engine, entry)
