"""Engines section: our inference engines beside smp eager, smp under ONNX Runtime and torchvision."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from datasets import VOCSegmentation, build_eval_transform

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..errors import UserError
from ..evaluation import ConfusionMatrix
from ..inference import ENGINES, create_engine, resolve_engine
from ..models import build_model
from .measure import Runner, eager, measure, onnxruntime_runner, smp_model

__all__ = ["engine_rows"]

SMP_REFERENCE = "smp mobilenet_v2 eager fp32 channels_last"


def engine_rows(*, size: int, warmup: int, repeats: int, threads: int, checkpoints: Sequence[str] = (),
                data_root: str | None = None) -> list[dict]:
    """Latency (batch 1), throughput (batch 8), and with ``data_root`` agreement with fp32 and mIoU per engine."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    model = _engine_model(checkpoints)
    calibration = _calibration(data_root, model)
    runners: dict[str, Runner] = {}
    for engine in ENGINES:
        try:
            label = f"ours engine={engine}" + (f" ({resolve_engine(engine)})" if engine == "auto" else "")
            runners[label] = create_engine(model, engine=engine, calibration=calibration)
        except ValueError as exc:
            print(f"  skipped engine {engine}: {exc}", file=sys.stderr)
    smp = smp_model("mobilenet_v2")
    tv_eager = eager(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None).eval())
    runners |= {SMP_REFERENCE: eager(smp),
                "smp mobilenet_v2 onnxruntime": onnxruntime_runner(smp),
                "torchvision deeplabv3_mobilenet_v3_large eager": lambda x: tv_eager(x)["out"]}
    single = measure(runners, _batch(size, 1), warmup=warmup, repeats=repeats)
    eight = measure(runners, _batch(size, 8), warmup=1, repeats=max(3, repeats // 3))
    reference = single[SMP_REFERENCE]
    quality = _agreement(model, runners, data_root) if data_root else {}
    rows = [{"model": k, "latency_ms": single[k], "vs_smp": single[k] / reference,
             "batch8_img_per_s": 8000 / eight[k], **quality.get(k, {})} for k in runners]
    rows.append({"model": "peak RSS, predict with engine=auto (fresh process)", "rss_mib": _peak_rss(size, threads)})
    return rows


def _batch(size: int, n: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _engine_model(checkpoints: Sequence[str]) -> nn.Module:
    if len(checkpoints) > 1:
        raise UserError("--section engines: give at most one --checkpoint")
    if not checkpoints:
        return build_model("mobilenetv2").eval()
    return model_from_checkpoint(load_checkpoint(checkpoints[0]), checkpoints[0]).eval()


def _val_batches(data_root: str, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dataset = VOCSegmentation(data_root, split="val", transform=build_eval_transform(mean=model.mean, std=model.std))
    return [(image[None], mask[None]) for image, mask in dataset]


def _calibration(data_root: str | None, model: nn.Module) -> list[torch.Tensor]:
    """int8 calibration images: the data's (at most 4), else random noise (then int8 accuracy means little)."""
    if data_root:
        return [image for image, _ in _val_batches(data_root, model)[:4]]
    return [torch.randn(1, 3, 256, 256) for _ in range(4)]


def _agreement(model: nn.Module, runners: dict[str, Runner], data_root: str) -> dict[str, dict[str, float]]:
    """Per engine: share of pixels whose class equals fp32 eager's, and mIoU on the split."""
    batches, num_classes = _val_batches(data_root, model), model.config["num_classes"]
    with torch.inference_mode():
        reference = [model(image).argmax(1) for image, _ in batches]
    out = {}
    for name, run in runners.items():
        if not name.startswith("ours"):
            continue
        matrix, same, total = ConfusionMatrix(num_classes), 0, 0
        with torch.inference_mode():
            for (image, mask), ref in zip(batches, reference):
                pred = run(image).argmax(1).cpu()
                matrix.update(pred, mask)
                same, total = same + int((pred == ref).sum()), total + ref.numel()
        out[name] = {"agreement_vs_fp32": same / total, "miou": matrix.scores()["miou"]}
    return out


def _peak_rss(size: int, threads: int) -> float:
    """Peak RSS (MiB, the child's own VmHWM: getrusage would report this parent's peak) of a process that
    imports the library, builds the auto engine and predicts one image."""
    code = (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
        f"torch.set_num_threads({threads}); from deeplab.models import build_model; "
        "from deeplab.inference import create_engine; "
        f"create_engine(build_model('mobilenetv2').eval(), engine='auto')(torch.randn(1, 3, {size}, {size})); "
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024
