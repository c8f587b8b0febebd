"""ONNX export with dynamic batch and spatial size, ONNX Runtime sessions, parity checks, int8 quantisation.

We use the TorchScript exporter with ``dynamic_axes``: it exports the size-based bilinear resizes as
``Shape -> Resize(sizes)`` (checked at odd sizes by the tests) and takes seconds, where the dynamo
exporter gives the same graph but takes about ten times longer on a small CPU.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, min_input_side, model_from_checkpoint, write_atomically
from ..errors import UserError, memory_failures_as

__all__ = ["INPUT_DESCRIPTION", "Parity", "export_checkpoint", "export_onnx", "input_metadata",
           "onnx_session", "parity_check", "quantize_int8"]

INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: How an image becomes the input (stored in the file with the mean and std, as no graph node does it).
INPUT_DESCRIPTION = ("float32 N x 3 x H x W: RGB / 255, then (x - mean) / std per channel; output: logits, "
                     "argmax = class id")
OPSET = 17
# Odd and unequal, unlike any export size, so a resize baked to one size would show up in the parity check.
DYNAMIC_PARITY_SIZE = (97, 131)
#: torch.onnx.export keeps its state in globals: two exports at once on threads (engines prepared in parallel)
#: failed with "GLOBALS.in_onnx_export must be False". warnings.catch_warnings is process-wide too.
_EXPORTING = threading.Lock()


def export_onnx(
    model: nn.Module, out: str | Path | io.BytesIO, *, input_size: Sequence[int] | None = None, batch_size: int = 1
) -> None:
    """Export ``model`` in eval mode to ONNX: dynamic batch, and dynamic height/width unless ``input_size=(H, W)``
    fixes them. A model in training mode is back in it afterwards, and the global RNG is left as it was (a model
    exported mid-training trains on as it would have)."""
    height, width = input_size if input_size is not None else (64, 64)
    example = torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch"} if input_size is not None else {0: "batch", 2: "height", 3: "width"}
    with _EXPORTING, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; see the module docstring
        was_training = model.training
        try:
            torch.onnx.export(
                model.eval(),
                (example,),
                out if isinstance(out, io.BytesIO) else str(out),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            )
        finally:
            model.train(was_training)


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, *, input_size: Sequence[int] | None = None, seed: int = 0,
    output_stride: int | None = None,
) -> tuple[Parity, dict[str, str]]:
    """Export the model of ``checkpoint`` (at ``output_stride`` if given) to ``out`` (ONNX) and check ONNX Runtime
    against PyTorch on one random input (``input_size``, or an odd size when height and width are dynamic); returns
    that parity and the metadata stored in the file (:func:`input_metadata`).

    The model is exported in memory (so no external-data files appear beside ``out``) and written atomically once
    checked: a failure or Ctrl-C leaves no partial file and keeps a previous one."""
    ckpt = load_checkpoint(checkpoint)
    smallest = min_input_side(ckpt["model_config"])
    if input_size is not None and min(input_size) < smallest:
        raise UserError(f"--input-size: height and width must be at least {smallest} for this model, got "
                        f"{list(input_size)}")
    model = model_from_checkpoint(ckpt, checkpoint, output_stride=output_stride).eval()
    buffer = io.BytesIO()
    height, width = input_size or DYNAMIC_PARITY_SIZE
    too_large = ("the export does not fit in memory{failed}; free some memory" if input_size is None else
                 f"--input-size {input_size[0]} {input_size[1]}: does not fit in memory{{failed}}; choose a smaller "
                 "size")
    with memory_failures_as(too_large):
        export_onnx(model, buffer, input_size=input_size)
        metadata = input_metadata(model, ckpt.get("class_names"))
        onnx_model = _with_metadata(buffer.getvalue(), metadata, int(model.config["num_classes"]))
        batch = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
        parity = parity_check(model, onnx_session(onnx_model), batch)
    write_atomically(out, lambda file: file.write(onnx_model), what="the ONNX file")
    return parity, metadata


def input_metadata(model: nn.Module, class_names: Sequence[str] | None) -> dict[str, str]:
    """What a user of the ONNX file needs besides the graph: the input's normalisation (imported and timm models
    differ from ImageNet's) and the class names, as strings (JSON lists) for the file's ``metadata_props``."""
    return {"input": INPUT_DESCRIPTION, "mean": json.dumps(list(model.mean)), "std": json.dumps(list(model.std)),
            "class_names": json.dumps(list(class_names or []))}


def _with_metadata(onnx_model: bytes, metadata: dict[str, str], num_classes: int) -> bytes:
    """``onnx_model`` with ``metadata`` stored as its ``metadata_props`` (read by ONNX Runtime's
    ``get_modelmeta().custom_metadata_map``), and its logits declared as ``num_classes`` channels at the input's
    height and width: the exporter names those after an inner resize (``Resizelogits_dim_1``), which hid the class
    count and a fixed size from the graph's signature."""
    import onnx

    proto = onnx.load_from_string(onnx_model)
    logits, image = (value.type.tensor_type.shape.dim for value in (proto.graph.output[0], proto.graph.input[0]))
    logits[1].dim_value = num_classes
    for axis in (2, 3):
        logits[axis].CopyFrom(image[axis])
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def onnx_session(model: str | Path | bytes, *, threads: int | None = None):
    """ONNX Runtime CPU session with every graph optimisation on, using ``threads`` (default: torch's count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle threads that spin steal the cores from whatever runs next (the caller's own PyTorch work included);
    # on 2 cores not spinning was also faster (101 vs 118 ms at 512x512).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Parity:
    """How closely an exported model's logits follow PyTorch's on one input."""

    max_abs_diff: float
    argmax_agreement: float
    input_shape: tuple[int, ...]

    def __str__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return f"parity on {shape}: max abs logit diff {self.max_abs_diff:.3g}, argmax agreement {self.argmax_agreement:.4%}"


def parity_check(model: nn.Module, session, batch: torch.Tensor) -> Parity:
    """Compare ``session``'s logits with ``model``'s (eval, fp32) on ``batch``."""
    with torch.inference_mode():
        expected = model.eval()(batch).float()
    got = torch.from_numpy(session.run(None, {INPUT_NAME: batch.numpy()})[0])
    return Parity(
        max_abs_diff=float((got - expected).abs().max()),
        argmax_agreement=float((got.argmax(1) == expected.argmax(1)).float().mean()),
        input_shape=tuple(batch.shape),
    )


def quantize_int8(onnx_model: bytes, calibration: Iterable[torch.Tensor]) -> bytes:
    """Static int8 quantisation (QDQ, per-channel weights) of an fp32 ONNX model, calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [{INPUT_NAME: b.numpy().astype(np.float32)} for b in calibration]
    if not batches:
        raise ValueError("int8 quantisation needs at least one calibration batch")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict | None:
            return next(self._items, None)

    with tempfile.TemporaryDirectory() as tmp, _root_warnings_hidden():
        fp32, prepared, int8 = (os.path.join(tmp, n) for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        Path(fp32).write_bytes(onnx_model)
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            int8,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return Path(int8).read_bytes()


@contextlib.contextmanager
def _root_warnings_hidden() -> Iterator[None]:
    """Hide the warnings ONNX Runtime's quantiser logs on the root logger: one line per rank-1 weight (LayerNorm's,
    in MobileViT) that has no channel axis, which it then quantises per tensor, as it should."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
