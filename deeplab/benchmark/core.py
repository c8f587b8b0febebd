"""Core section: our DeepLabV3+ (separable, plain convs, a one-conv decoder) against smp's DeepLabV3Plus(mobilenet_v2)."""
from __future__ import annotations

import torch

from ..models import build_model
from .measure import eager, measure, model_stats, smp_model

__all__ = ["core_rows"]

SMP_REFERENCE = "smp DeepLabV3Plus mobilenet_v2"


def core_rows(*, size: int, warmup: int, repeats: int) -> list[dict]:
    """Params, GMACs, median latency (batch 1) and the ratio to smp, all measured in this run."""
    models = {
        "ours mobilenetv2 separable": build_model("mobilenetv2"),
        "ours mobilenetv2 separable=False": build_model("mobilenetv2", separable=False),
        "ours mobilenetv2 decoder_convs=1": build_model("mobilenetv2", decoder_convs=1),
        SMP_REFERENCE: smp_model("mobilenet_v2"),
    }
    batch = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    latency = measure({k: eager(m) for k, m in models.items()}, batch, warmup=warmup, repeats=repeats)
    reference = latency[SMP_REFERENCE]
    return [{"model": k, **model_stats(m, size), "latency_ms": latency[k], "vs_smp": latency[k] / reference}
            for k, m in models.items()]
