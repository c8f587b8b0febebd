"""Timing and counting helpers shared by the benchmark sections: interleaved latency, params/GMACs, peers."""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..checkpoint import write_json
from ..inference.export import INPUT_NAME, export_onnx, onnx_session

__all__ = ["SMP_STRIDE", "Runner", "cpu_flags", "eager", "markdown", "measure", "measure_rounds", "model_stats",
           "onnxruntime_runner", "openvino_runner", "smp_model", "write_json"]

Runner = Callable[[torch.Tensor], Any]
#: smp's DeepLabV3Plus (at OS16, and OS8) refuses an input whose sides this does not divide.
SMP_STRIDE = 16


def measure(runners: dict[str, Runner], batch: torch.Tensor, *, warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each runner on ``batch``, timed round-robin."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runners.values():
                run(batch)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(batch)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def measure_rounds(runners: dict[str, Runner], batch: torch.Tensor, *, warmup: int, repeats: int,
                   rounds: int) -> dict[str, list[float]]:
    """Each runner's median milliseconds in each of ``rounds`` interleaved measurements (their spread shows load)."""
    medians: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(rounds):
        for name, value in measure(runners, batch, warmup=warmup if round_index == 0 else 0, repeats=repeats).items():
            medians[name].append(value)
    return medians


def eager(model: nn.Module) -> Runner:
    """fp32 eager channels_last, as users of smp or torchvision would run it."""
    model = model.eval().to(memory_format=torch.channels_last)
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


def onnxruntime_runner(model: nn.Module) -> Runner:
    """The model exported to ONNX and run by ONNX Runtime (same settings as our ``onnxruntime`` engine)."""
    buffer = io.BytesIO()
    export_onnx(model.eval(), buffer)
    session = onnx_session(buffer.getvalue())
    return lambda x: session.run(None, {INPUT_NAME: x.numpy()})


def openvino_runner(model: nn.Module, precision: str) -> Runner:
    """The model exported to ONNX and run by OpenVINO at ``precision`` (same settings as our OpenVINO engines)."""
    from ..inference.openvino_engine import compile_ir, onnx_to_ir

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model.eval(), Path(tmp) / "model.onnx")
        onnx_to_ir(Path(tmp) / "model.onnx", Path(tmp) / "model.xml")
        return compile_ir(Path(tmp) / "model.xml", precision=precision)


def model_stats(model: nn.Module, size: int) -> dict[str, float]:
    """Parameters (M) and GMACs (FLOPs / 2, counted by torch's FlopCounterMode) at ``size x size``."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.randn(1, 3, size, size))
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "gmacs": counter.get_total_flops() / 2e9}


def smp_model(encoder: str, output_stride: int = 16, num_classes: int = 21) -> nn.Module:
    """smp's DeepLabV3Plus with random weights (no download) and our class count (smp's default is 1)."""
    import segmentation_models_pytorch as smp  # deferred: only benchmarks compare against smp

    return smp.DeepLabV3Plus(
        encoder_name=encoder, encoder_weights=None, encoder_output_stride=output_stride, classes=num_classes
    )


def cpu_flags() -> str:
    """The CPU's model name and the vector/matrix extensions that decide which engines are fast on it."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
    model, flags = "unknown CPU", set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = [flag for flag in wanted if flag in flags]
    return f"{model}; {' '.join(present) or 'no AVX2/AVX-512/AMX'}; torch capability {torch.backends.cpu.get_cpu_capability()}"


def markdown(rows: list[dict]) -> str:
    """Rows (dicts sharing keys, in order of first appearance) as a Markdown table."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
