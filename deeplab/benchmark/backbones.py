"""Backbones section: every registered backbone at OS16 and OS8, beside smp with the matching encoder, eager and
under ONNX Runtime."""
from __future__ import annotations

import io
import sys
from collections.abc import Sequence

import torch
from torch import nn

from backbones import list_backbones, unknown_backbone_message

from ..checkpoint import load_checkpoint
from ..errors import UserError, one_line
from ..inference.export import DYNAMIC_PARITY_SIZE, INPUT_NAME, export_onnx, onnx_session, parity_check
from ..models import build_model
from .measure import Runner, eager, measure, model_stats, smp_model

__all__ = ["SMP_ENCODERS", "backbone_rows", "check_backbone_names", "onnx_runner"]

#: Our backbone name -> smp's encoder name for the same network, where smp's DeepLabV3Plus takes it at OS16 and
#: OS8. None for the others: smp has no ShuffleNet, Inception v1/v2, MobileNeXt or BlazeNet encoder, and its
#: ``tu-inception_v3`` cannot be dilated (timm's Inception v3 has no output stride).
SMP_ENCODERS = {
    "mobilenetv1": "tu-mobilenetv1_100",
    "mobilenetv2": "mobilenet_v2",
    "mobilenetv3_large": "tu-mobilenetv3_large_100",
    "mobilenetv3_small": "tu-mobilenetv3_small_100",
    "mobilenetv4_conv_small": "tu-mobilenetv4_conv_small",
    "mobilenetv4_conv_medium": "tu-mobilenetv4_conv_medium",
    "mobilenetv4_hybrid_medium": "tu-mobilenetv4_hybrid_medium",
    "mobilevit_s": "tu-mobilevit_s",
    "mobilevit_xs": "tu-mobilevit_xs",
    "xception65": "tu-xception65",
}
#: Largest logit difference between ONNX Runtime and PyTorch, relative to the largest logit (at least 1), for an
#: export to count as working.
ONNX_TOLERANCE = 1e-4


def backbone_rows(*, size: int, warmup: int, repeats: int, names: Sequence[str] | None = None,
                  checkpoints: Sequence[str] = ()) -> list[dict]:
    """Params, GMACs and latency per (backbone, OS), eager and under ONNX Runtime (``onnx`` says whether the
    export works at another, odd, size); ``miou`` from a checkpoint of that pair where one is given."""
    names = list(names or list_backbones())
    check_backbone_names(names)
    mious = _checkpoint_mious(checkpoints)
    batch = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in names:
        for output_stride in (16, 8):
            ours = f"ours {name} OS{output_stride}"
            models = {ours: build_model(name, output_stride=output_stride)}
            if name in SMP_ENCODERS:
                models[f"smp {SMP_ENCODERS[name]} OS{output_stride}"] = smp_model(SMP_ENCODERS[name], output_stride)
            runners = {k: eager(m) for k, m in models.items()}
            onnx_run, onnx = onnx_runner(models[ours])
            if onnx_run is not None:
                runners[f"{ours} onnxruntime"] = onnx_run
            latency = measure(runners, batch, warmup=warmup, repeats=repeats)
            for key, model in models.items():
                row = {"model": key, **model_stats(model, size), "latency_ms": latency[key]}
                if key == ours:
                    ort = latency.get(f"{ours} onnxruntime")
                    row |= {"ort_ms": ort, "ort_vs_eager": ort / latency[key] if ort else None, "onnx": onnx,
                            "miou": mious.get((name, output_stride))}
                rows.append(row)
            print(f"  measured {name} OS{output_stride}", file=sys.stderr, flush=True)
    return rows


def check_backbone_names(names: Sequence[str]) -> None:
    """A UserError naming the first of ``names`` (``--backbones``) that is no registered backbone, with the closest."""
    for name in names:
        if name not in list_backbones():
            raise UserError(f"--backbones: {unknown_backbone_message(name)}")


def onnx_runner(model: nn.Module) -> tuple[Runner | None, str]:
    """``model`` exported to ONNX (traced at 64x64) and run by ONNX Runtime, with a word on the export: ``ok``, or
    why it cannot be used (the export fails, or its logits differ from PyTorch's at an odd size)."""
    buffer = io.BytesIO()
    check = torch.randn(1, 3, *DYNAMIC_PARITY_SIZE, generator=torch.Generator().manual_seed(0))
    size = "x".join(map(str, DYNAMIC_PARITY_SIZE))
    # Any exporter or runtime failure is a finding for the table, not a crash.
    try:
        export_onnx(model.eval(), buffer)
        session = onnx_session(buffer.getvalue())
    except Exception as exc:
        return None, f"export fails: {one_line(exc, 120)}"
    try:
        parity = parity_check(model, session, check)
    except Exception as exc:
        return None, f"fails at {size}: {one_line(exc, 120)}"
    with torch.inference_mode():
        scale = max(1.0, float(model(check).abs().max()))
    if not parity.max_abs_diff <= ONNX_TOLERANCE * scale:
        return None, f"wrong at {size} (max abs logit diff {parity.max_abs_diff:.2g})"
    return (lambda x: session.run(None, {INPUT_NAME: x.numpy()})), "ok"


def _checkpoint_mious(paths: Sequence[str]) -> dict[tuple[str, int], float]:
    """(backbone, output stride) -> the best_miou a training run stored in its checkpoint."""
    found = {}
    for path in paths:
        ckpt = load_checkpoint(path)
        config = ckpt["model_config"]
        if "best_miou" in ckpt:
            found[(config["backbone"], config.get("output_stride", 16))] = float(ckpt["best_miou"])
    return found
