"""A checkpoint's engine, prepared once and reused: the exported, converted or calibrated model is kept in the
engine cache (:mod:`.cache`), so a later run with the same checkpoint loads it without rebuilding the PyTorch
model, exporting or calibrating, and without importing torchvision, timm, ONNX or NNCF. ``auto``'s verified choice
is cached beside them, so a later run does not verify again.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError
from .auto import choose_auto
from .cache import PER_RUN_CALIBRATION, CacheKey, EngineCache
from .calibration import INPUTS, Calibration
from .engines import SPECS, artefact_versions, create_engine, load_artefacts, resolve_engine, write_artefacts
from .tta import Engine

__all__ = ["SHAPE_POLICY", "PreparedEngine", "checkpoint_engine"]

#: Every engine keeps height and width dynamic: on OpenVINO a static 512x512 model was no faster (within noise).
SHAPE_POLICY = "dynamic"


@dataclass(frozen=True)
class PreparedEngine:
    """A runnable engine, the concrete engine it is and, for ``auto`` on the CPU, the line saying what ``auto``
    chose and why (see :mod:`.auto`)."""

    run: Engine
    name: str
    choice: str | None = None


def checkpoint_engine(
    path: str | Path,
    ckpt: dict[str, Any],
    checkpoint_sha256: Callable[[], str],
    model: Callable[[], torch.nn.Module],
    *,
    engine: str,
    device: torch.device,
    calibration: Calibration | None,
    prepare: Callable[[np.ndarray], torch.Tensor],
    max_size: int | None,
    variant: str | None = None,
) -> PreparedEngine:
    """The engine for checkpoint ``path`` (read as ``ckpt`` from bytes whose SHA-256 ``checkpoint_sha256()`` gives,
    asked only when the cache is used), from the cache when a valid entry exists.

    ``model()`` rebuilds the PyTorch model (called only when something must be built); ``variant`` names how it
    differs from the checkpoint's own config (e.g. another output stride). int8 engines calibrate on
    ``calibration``'s images made into inputs by ``prepare``, the Predictor's own preprocessing at ``max_size``.
    ``auto`` on the CPU is verified on the checkpoint's held-out images once (:func:`.auto.choose_auto`).
    """
    cache = functools.cache(lambda: EngineCache(path, checkpoint_sha256()))
    build = functools.partial(_prepared, cache, checkpoint_sha256, model, device=device, calibration=calibration,
                              prepare=prepare, max_size=max_size, variant=variant)
    if engine == "auto" and device.type == "cpu":
        choice = choose_auto(cache(), checkpoint_sha256(), ckpt=ckpt, build=build, reference=model,
                             calibration=calibration, prepare=prepare, max_size=max_size, variant=variant)
        return PreparedEngine(choice.run or build(choice.engine), choice.engine, choice.line)
    try:
        engine = resolve_engine(engine, device)
    except ValueError as exc:  # an engine that does not fit this device or is not installed
        raise UserError(f"--engine {engine}: {exc}") from None
    return PreparedEngine(build(engine), engine)


def _prepared(cache: Callable[[], EngineCache], sha256: Callable[[], str], model: Callable[[], torch.nn.Module],
              engine: str, *, device: torch.device, calibration: Calibration | None,
              prepare: Callable[[np.ndarray], torch.Tensor], max_size: int | None, variant: str | None) -> Engine:
    """The concrete ``engine`` for the checkpoint, loaded from the cache or built and stored there."""
    spec = SPECS[engine]
    if spec.runtime == "torch":
        return create_engine(model(), engine=engine, device=device)
    if spec.calibrated and calibration is None:
        raise UserError(f"--engine {engine}: needs calibration images; pass --calibration DIR (the checkpoint's "
                        "training data is not on this machine)")
    key = CacheKey(sha256(), engine, spec.precision, SHAPE_POLICY, artefact_versions(engine),
                   _calibration_key(calibration, max_size) if spec.calibrated else None, variant)
    entry = cache().find(key)
    if entry is not None:
        return load_artefacts(engine, entry)
    network = model()

    def write(folder: Path, kept: bool) -> None:
        batches = None
        if spec.calibrated:
            batches = calibration.batches(prepare)
            print(f"calibrating {engine} on {len(batches)} images from {calibration.source} "
                  f"({_kept(calibration, kept)})", file=sys.stderr)
        write_artefacts(network, engine, folder, batches)

    with cache().build(key, write) as entry:
        return load_artefacts(engine, entry)


def _calibration_key(calibration: Calibration, max_size: int | None) -> str:
    """The cache key's calibration: the images' digest, marked when they are the ones this run predicts (see
    :data:`.cache.PER_RUN_CALIBRATION`)."""
    digest = calibration.digest(max_size)
    return PER_RUN_CALIBRATION + digest if calibration.source == INPUTS else digest


def _kept(calibration: Calibration, kept: bool) -> str:
    """How long a calibration made now serves: an entry calibrated on the images to predict gives way to the next."""
    if not kept:
        return "on every run: it cannot be cached"
    return "cached for these images only" if calibration.source == INPUTS else "once: the result is cached"
