"""Inference engines: callables mapping a normalised ``(N, 3, H, W)`` float batch to float32 logits.

Every engine accepts any batch size and any ``H x W`` (shapes stay dynamic) and returns
``(N, num_classes, H, W)`` float32 logits. Each names its runtime and its precision; none changes precision
on its own.

- ``torch``: fp32 eager, BatchNorm folded into the convs, channels_last memory format; on CUDA with cuDNN's TF32
  convolutions (PyTorch's default on Ampere and later, a 10-bit mantissa) turned off while it runs.
- ``torch-bf16``: as ``torch`` under bf16 autocast on CPUs with native bf16 (refused elsewhere), or fp16
  autocast on CUDA.
- ``onnxruntime``: our ONNX export run by ONNX Runtime's CPU provider, all graph optimisations on (fp32).
- ``int8``: that ONNX model statically quantised to int8 by ONNX Runtime (QDQ, per-channel weights), calibrated.
- ``openvino``: the ONNX export converted to OpenVINO IR, fp32 (``INFERENCE_PRECISION_HINT=f32``).
- ``openvino-bf16``: the same IR in bf16; CPUs whose OpenVINO plugin has native bf16 only.
- ``openvino-int8``: the IR quantised to int8 by NNCF (post-training, calibrated), other ops in fp32.
- ``auto``: the fastest engine that keeps the answer, verified per checkpoint and machine (below).

``auto`` on the CPU, given a checkpoint (``predict.py``, ``eval.py``, :class:`~deeplab.inference.Predictor`), is
decided by measurement (:mod:`.auto`): the reduced precisions that run and pay off on this CPU are tried fastest
first (``openvino-int8``, ``int8`` on CPUs with VNNI or AVX-512; ``openvino-bf16``, ``torch-bf16`` on CPUs with
native bf16), each against the fp32 PyTorch model on up to 16 images of the checkpoint's validation split; the
first whose classes equal fp32's on >= 99.5% of the pixels (and, with masks, loses <= 0.5 mIoU points) is chosen,
else ``onnxruntime`` fp32 (``torch`` without onnxruntime). The choice is cached beside the engines and printed in
one line. It is per checkpoint because the reduced precisions keep some models' answers and not others': on an AMD
EPYC Zen 5 (AVX512-BF16, AVX512-VNNI, no AMX) the demo model kept 99.97% of its pixels in bf16, 99.84% in ONNX
Runtime int8 and 99.68% in NNCF int8, while a weak model trained on voc_mini's 8 images kept 99.17%, 96.5% and
97.0% (more near-ties between classes). Without validation images, ``auto`` stays on exact fp32 and says so.

Without a checkpoint (:func:`resolve_engine`, :func:`create_engine`), ``auto`` is that exact fallback on the CPU;
on CUDA it is ``torch-bf16`` (fp16 autocast). Speeds on that Zen 5, quiet, 2 threads, 512x512, batch 1 (the demo
model): NNCF int8 12 ms, ONNX Runtime int8 16, OpenVINO bf16 18, torch-bf16 39, ONNX Runtime fp32 42, OpenVINO fp32
34, against 98 ms for smp's eager fp32. OpenVINO fp32 is not a candidate: it was 18% faster than ONNX Runtime fp32 in
that run but 8% slower in an earlier quiet one on the same CPU type (81 vs 75 ms), and it needs the optional extra. On a 2-core AMD EPYC Zen 3
(AVX2 only, no bf16, no VNNI) no reduced precision is tried, and ONNX Runtime ran our model 1.5-2x faster than
fp32 eager PyTorch.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from .cache import code_digest, library_versions
from .tta import Engine, require_finite

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ENGINES",
    "SPECS",
    "EngineSpec",
    "artefact_versions",
    "bf16_supported",
    "create_engine",
    "load_artefacts",
    "resolve_engine",
    "write_artefacts",
]


@dataclass(frozen=True)
class EngineSpec:
    """What an engine runs on and in which precision; ``package`` is the distribution its runtime comes from."""

    runtime: str
    precision: str
    package: str

    @property
    def calibrated(self) -> bool:
        return self.precision == "int8"


# No torch.compile engine: on the 2-core AVX2 CPU it compiled for ~100 s and ran slower than ONNX Runtime.
SPECS = {
    "torch": EngineSpec("torch", "f32", "torch"),
    "torch-bf16": EngineSpec("torch", "bf16", "torch"),
    "onnxruntime": EngineSpec("onnxruntime", "f32", "onnxruntime"),
    "int8": EngineSpec("onnxruntime", "int8", "onnxruntime"),
    "openvino": EngineSpec("openvino", "f32", "openvino"),
    "openvino-bf16": EngineSpec("openvino", "bf16", "openvino"),
    "openvino-int8": EngineSpec("openvino", "int8", "openvino"),
}
ENGINES = ("auto", *SPECS)
#: How to install what an engine needs (onnxruntime is a dependency; OpenVINO and NNCF the ``openvino`` extra).
INSTALL_HINT = {"openvino": "pip install 'deeplabv3plus-toolkit[openvino]'", "onnxruntime": "pip install onnxruntime",
                "nncf": "pip install 'deeplabv3plus-toolkit[openvino]'"}


def bf16_supported() -> bool:
    """Whether PyTorch runs bf16 convolutions natively on this CPU (oneDNN with AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def resolve_engine(engine: str, device: str | torch.device = "cpu") -> str:
    """The concrete engine ``engine`` stands for on ``device`` (``auto`` picks; others are checked)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    device = torch.device(device)
    if engine == "auto":
        return _auto_engine(device)
    spec = SPECS[engine]
    if spec.runtime != "torch" and device.type != "cpu":
        raise ValueError(f"engine {engine!r} runs on the CPU only, not on {device}")
    for package in (spec.package, "nncf") if engine == "openvino-int8" else (spec.package,):
        if not _installed(package):
            raise ValueError(f"engine {engine!r} needs {package}, which is not installed: {INSTALL_HINT[package]}")
    if engine == "torch-bf16" and device.type == "cpu" and not bf16_supported():
        # Without native bf16, oneDNN emulates it: minutes per image instead of a speed-up.
        raise ValueError("engine 'torch-bf16' needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has none")
    if engine == "openvino-bf16":
        from .openvino_engine import bf16_native

        if not bf16_native():
            raise ValueError("engine 'openvino-bf16' needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has none")
    return engine


def _auto_engine(device: torch.device) -> str:
    """``auto`` without a checkpoint to verify on: exact fp32 on the CPU (``.auto`` verifies faster ones), fp16
    autocast on CUDA."""
    if device.type == "cuda":
        return "torch-bf16"
    return "onnxruntime" if _installed("onnxruntime") else "torch"


def artefact_versions(engine: str) -> dict[str, str]:
    """Versions of the libraries and of this toolkit's code that write ``engine``'s artefacts: a cached artefact is
    valid for these only."""
    spec = SPECS[engine]
    packages = ["torch", spec.package] + (["nncf"] if engine == "openvino-int8" else [])
    return {**library_versions(*packages), "deeplab-code": code_digest()}


def write_artefacts(model: nn.Module, engine: str, folder: Path,
                    calibration: Iterable[torch.Tensor] | None = None) -> None:
    """Write the files ``engine`` runs from into ``folder`` (ONNX or OpenVINO IR); int8 reads ``calibration``."""
    from .export import export_onnx, quantize_int8  # deferred: torch.onnx loads only when an export is due

    spec = SPECS[engine]
    if spec.runtime == "torch":
        raise ValueError(f"engine {engine!r} runs the PyTorch model itself and has no artefacts")
    if spec.calibrated and calibration is None:
        raise ValueError(f"engine {engine!r} needs calibration batches (a few normalised images)")
    onnx_path = folder / "model.onnx"
    model = copy.deepcopy(model).cpu().eval()
    export_onnx(model, onnx_path)
    if spec.calibrated:
        calibration = _finite_calibration(model, calibration)
    if engine == "int8":
        onnx_path.write_bytes(quantize_int8(onnx_path.read_bytes(), calibration))
    elif spec.runtime == "openvino":
        from .openvino_engine import onnx_to_ir

        onnx_to_ir(onnx_path, folder / "model.xml", calibration=calibration if spec.calibrated else None)
        onnx_path.unlink()


def _finite_calibration(model: nn.Module, calibration: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The calibration batches as float CPU tensors, once the fp32 model's scores on them are finite: ranges
    measured on NaN make ONNX Runtime's quantiser assert and NNCF's a finite model of nothing."""
    batches = [batch.float().cpu() for batch in calibration]
    odd = next((batch for batch in batches if batch.ndim != 4), None)
    if odd is not None:  # one batch given alone is iterated into its images, on which the model fails
        raise ValueError(f"calibration: expected (N, 3, H, W) batches, got one of shape {tuple(odd.shape)}; pass "
                         "[batch] for a single batch")
    with torch.inference_mode():
        for batch in batches:
            require_finite(model(batch))
    return batches


def load_artefacts(engine: str, folder: Path, *, threads: int | None = None) -> Engine:
    """The runnable engine from files written by :func:`write_artefacts`."""
    spec = SPECS[engine]
    if spec.runtime == "onnxruntime":
        from .export import INPUT_NAME, onnx_session

        session = onnx_session(folder / "model.onnx", threads=threads)

        def run(batch: torch.Tensor) -> torch.Tensor:
            array = batch.detach().float().cpu().contiguous().numpy()
            return torch.from_numpy(session.run(None, {INPUT_NAME: array})[0])

        return run
    from .openvino_engine import compile_ir

    return compile_ir(folder / "model.xml", precision=spec.precision, threads=threads)


def create_engine(
    model: nn.Module,
    *,
    engine: str = "torch",
    device: str | torch.device = "cpu",
    calibration: Iterable[torch.Tensor] | None = None,
) -> Engine:
    """Prepare ``model`` for inference on ``device`` with the named engine; returns ``batch -> logits``.

    ``calibration`` (a few normalised batches like the ones to predict) is required by the int8 engines only.
    Nothing is cached here; :class:`~deeplab.inference.Predictor` keeps prepared engines beside the checkpoint.
    """
    device = torch.device(device)
    engine = resolve_engine(engine, device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    # torch.compile's wrapper: the ONNX export refuses to trace it, and the folded copy would compile anew (a minute).
    model = getattr(model, "_orig_mod", model)
    if SPECS[engine].runtime != "torch":
        with tempfile.TemporaryDirectory(prefix="deeplab-engine-") as tmp:
            write_artefacts(model, engine, Path(tmp), calibration)
            return load_artefacts(engine, Path(tmp))
    return _torch_engine(model, device, bf16=engine == "torch-bf16")


def _torch_engine(model: nn.Module, device: torch.device, *, bf16: bool) -> Engine:
    """BatchNorm-folded eval copy on ``device`` in channels_last (the layout oneDNN/cuDNN convs prefer)."""
    from .fuse import fold_batchnorm

    # Its own generator: an engine made mid-training leaves the run's random stream as it was.
    example = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(next(model.parameters()).device)
    prepared = fold_batchnorm(model, example).to(device, memory_format=torch.channels_last)
    autocast_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if bf16 else None

    exact = autocast_dtype is None and device.type == "cuda"

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> torch.Tensor:
        # float32 as the other runtimes take it: a float64 batch (normalised in numpy) failed in the first conv.
        batch = batch.to(device, torch.float32, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            with _without_tf32_convs() if exact else contextlib.nullcontext():
                return prepared(batch).float()

    return run


@contextlib.contextmanager
def _without_tf32_convs() -> Iterator[None]:
    """cuDNN convolutions in full fp32 inside the block (PyTorch lets them round inputs to TF32 by default, an
    error of about 1e-3 that an engine called fp32 must not add), the caller's setting restored after it."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
