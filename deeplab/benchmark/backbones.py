"""Backbones section: every registered backbone at OS16 and OS8, beside smp with the matching encoder."""
from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from backbones import list_backbones

from ..checkpoint import load_checkpoint
from ..models import build_model
from .measure import eager, measure, model_stats, smp_model

__all__ = ["SMP_ENCODERS", "backbone_rows"]

#: Our backbone name -> smp's encoder name for the same network.
SMP_ENCODERS = {"mobilenetv2": "mobilenet_v2", "mobilenetv3_large": "tu-mobilenetv3_large_100",
                "xception65": "tu-xception65"}


def backbone_rows(*, size: int, warmup: int, repeats: int, names: Sequence[str] | None = None,
                  checkpoints: Sequence[str] = ()) -> list[dict]:
    """Params, GMACs and latency per (backbone, OS); ``miou`` from a checkpoint of that pair where one is given."""
    mious = _checkpoint_mious(checkpoints)
    batch = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in names or list_backbones():
        for output_stride in (16, 8):
            models = {f"ours {name} OS{output_stride}": build_model(name, output_stride=output_stride)}
            if name in SMP_ENCODERS:
                models[f"smp {SMP_ENCODERS[name]} OS{output_stride}"] = smp_model(SMP_ENCODERS[name], output_stride)
            latency = measure({k: eager(m) for k, m in models.items()}, batch, warmup=warmup, repeats=repeats)
            for key, model in models.items():
                miou = mious.get((name, output_stride)) if key.startswith("ours") else None
                rows.append({"model": key, **model_stats(model, size), "latency_ms": latency[key], "miou": miou})
            print(f"  measured {name} OS{output_stride}", file=sys.stderr, flush=True)
    return rows


def _checkpoint_mious(paths: Sequence[str]) -> dict[tuple[str, int], float]:
    """(backbone, output stride) -> the best_miou a training run stored in its checkpoint."""
    found = {}
    for path in paths:
        ckpt = load_checkpoint(path)
        config = ckpt["model_config"]
        if "best_miou" in ckpt:
            found[(config["backbone"], config.get("output_stride", 16))] = float(ckpt["best_miou"])
    return found
