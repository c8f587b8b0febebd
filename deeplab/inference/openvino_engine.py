"""OpenVINO engines: our ONNX export converted to OpenVINO IR, int8 by NNCF post-training quantisation, and a
compiled CPU model whose inference precision is set explicitly.

OpenVINO's CPU plugin runs fp32 models in bf16 by default on CPUs with native bf16 (AVX512-BF16, AMX), which
changes the predictions without saying so; every model here is compiled with ``INFERENCE_PRECISION_HINT`` set
and the compiled model is asked back which precision it took.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .tta import Engine

__all__ = ["PRECISIONS", "bf16_native", "compile_ir", "onnx_to_ir"]

#: Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values. int8 IR runs its unquantised ops in f32.
PRECISIONS = {"f32": "f32", "bf16": "bf16", "int8": "f32"}


def _core():
    import openvino as ov

    return ov.Core()


def bf16_native() -> bool:
    """Whether OpenVINO's CPU plugin has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def onnx_to_ir(onnx_path: str | Path, xml_path: str | Path, *, calibration: Iterable[torch.Tensor] | None = None) -> None:
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin``, fp32 weights); int8 when ``calibration`` is given.

    int8 is NNCF's post-training quantisation, calibrated on the normalised ``(1, 3, H, W)`` batches: the
    performance preset (symmetric int8 weights and activations, which VNNI and AMX run fastest) with fast bias
    correction.
    """
    import openvino as ov  # deferred: only the OpenVINO engines need it

    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        model = _quantize(model, calibration)
    try:  # save_model compresses weights to fp16 by default: a silent precision change we do not want.
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except RuntimeError as exc:
        # OpenVINO says only "iostream error" on a full disk; the IR's fp32 weights take about the ONNX file's size.
        if shutil.disk_usage(Path(xml_path).parent).free >= Path(onnx_path).stat().st_size:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(xml_path)) from exc


def _quantize(model, calibration: Iterable[torch.Tensor]):
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # NNCF's import probes for CUDA
    import nncf  # deferred: a heavy import, needed only when an int8 model is made

    logging.getLogger("nncf").setLevel(logging.ERROR)
    samples = [batch.detach().float().cpu().numpy() for batch in calibration]
    if not samples:
        raise ValueError("int8 quantisation needs at least one calibration image")
    # NNCF draws its progress bars on standard output, which holds a tool's results (and `--json /dev/stdout`).
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=len(samples), fast_bias_correction=True)


def compile_ir(xml_path: str | Path, *, precision: str, threads: int | None = None) -> Engine:
    """Compile an IR for the CPU at ``precision`` (``f32``, ``bf16`` or ``int8``); returns ``batch -> logits``.

    The returned function may be called from several threads: calls take turns on the one infer request, whose
    input and output buffers a second caller would otherwise overwrite mid-call (and get the other's logits).
    """
    import openvino as ov

    hint = PRECISIONS[precision]
    compiled = _core().compile_model(str(xml_path), "CPU", {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
    })
    took = compiled.get_property("INFERENCE_PRECISION_HINT")
    if took != getattr(ov.Type, hint):
        raise RuntimeError(f"OpenVINO compiled the model in {took} instead of the requested {hint}")
    request = compiled.create_infer_request()
    lock = threading.Lock()

    def run(batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        # share_outputs=False (the default) copies the logits out of the request's buffer, which the next call reuses.
        with lock:
            return torch.from_numpy(request.infer({0: array}, share_inputs=True)[0])

    return run
