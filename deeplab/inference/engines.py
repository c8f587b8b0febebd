"""Inference engines: callables mapping a normalised ``(N, 3, H, W)`` float batch to float32 logits.

Every engine accepts any batch size and any ``H x W`` and returns ``(N, num_classes, H, W)`` float32 logits.

- ``torch``: fp32 eager, BatchNorm folded into the convs, channels_last memory format.
- ``torch-bf16``: as ``torch`` under bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX; refused
  elsewhere, where emulation is far slower than fp32), or fp16 autocast on CUDA.
- ``onnxruntime``: ONNX export (in memory) run by ONNX Runtime's CPU provider, all graph optimisations on.
- ``int8``: the ONNX model statically quantised to int8, calibrated on ``calibration`` batches (CPU).
- ``auto``: the fastest measured engine for the device: fp16 autocast on CUDA; ONNX Runtime on CPU
  (on a 2-core AVX2 CPU it ran our MobileNetV2 model about 1.5-2x faster than fp32 eager; see tools/benchmark.py),
  falling back to ``torch`` when onnxruntime is not installed.
"""
from __future__ import annotations

import copy
import importlib.util
import io
from typing import Iterable

import torch

from ..models import DeepLabV3Plus
from .export import INPUT_NAME, export_onnx, onnx_session, quantize_int8
from .fuse import fold_batchnorm
from .tta import Engine

__all__ = ["ENGINES", "bf16_supported", "create_engine", "resolve_engine"]

# No torch.compile engine: on the 2-core AVX2 CPU it compiled for ~100 s and ran slower than ONNX Runtime.
ENGINES = ("auto", "torch", "torch-bf16", "onnxruntime", "int8")
CPU_ONLY = ("onnxruntime", "int8")


def bf16_supported() -> bool:
    """Whether this CPU runs bf16 convolutions natively (oneDNN with AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_engine(engine: str, device: str | torch.device = "cpu") -> str:
    """The concrete engine ``engine`` stands for on ``device`` (``auto`` picks; others are checked)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    device = torch.device(device)
    if engine in CPU_ONLY and device.type != "cpu":
        raise ValueError(f"engine {engine!r} runs on the CPU only, not on {device}")
    if engine == "torch-bf16" and device.type == "cpu" and not bf16_supported():
        # Without native bf16, oneDNN emulates it: minutes per image instead of a speed-up.
        raise ValueError("engine 'torch-bf16' needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has none")
    if engine != "auto":
        return engine
    if device.type == "cuda":
        return "torch-bf16"
    return "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def create_engine(
    model: DeepLabV3Plus,
    *,
    engine: str = "torch",
    device: str | torch.device = "cpu",
    calibration: Iterable[torch.Tensor] | None = None,
) -> Engine:
    """Prepare ``model`` for inference on ``device`` with the named engine; returns ``batch -> logits``.

    ``calibration`` (a few normalised batches like the ones to predict) is required by ``int8`` only.
    """
    device = torch.device(device)
    engine = resolve_engine(engine, device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    if engine in CPU_ONLY:
        return _onnx_engine(model, quantize=engine == "int8", calibration=calibration)
    prepared = _fold_and_place(model, device)
    autocast_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if engine == "torch-bf16" else None

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            return prepared(batch).float()

    return run


def _fold_and_place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm-folded eval copy on ``device`` in channels_last (the layout oneDNN/cuDNN convs prefer)."""
    example = torch.randn(1, 3, 64, 64, device=next(model.parameters()).device)
    folded = fold_batchnorm(model, example)
    return folded.to(device, memory_format=torch.channels_last)


def _onnx_engine(model: torch.nn.Module, *, quantize: bool, calibration: Iterable[torch.Tensor] | None) -> Engine:
    if quantize and calibration is None:
        raise ValueError("engine 'int8' needs calibration batches (a few normalised images)")
    buffer = io.BytesIO()
    export_onnx(copy.deepcopy(model).cpu(), buffer)
    onnx_bytes = buffer.getvalue()
    if quantize:
        onnx_bytes = quantize_int8(onnx_bytes, (b.float().cpu() for b in calibration))
    session = onnx_session(onnx_bytes)

    def run(batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(session.run(None, {INPUT_NAME: array})[0])

    return run
