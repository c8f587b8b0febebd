"""ONNX export: dynamic batch and odd spatial sizes match PyTorch under ONNX Runtime."""
from __future__ import annotations

import concurrent.futures
import io
import logging

import numpy as np
import pytest
import torch

from deeplab.inference.export import export_onnx, onnx_session, parity_check, quantize_int8
from deeplab.models import build_model


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(num_classes=4, width_mult=0.25).eval()


def test_dynamic_export_matches_pytorch_at_other_sizes(tiny_model: torch.nn.Module) -> None:
    buffer = io.BytesIO()
    export_onnx(tiny_model, buffer)  # traced at 64x64
    session = onnx_session(buffer.getvalue())
    for shape in [(2, 3, 45, 77), (1, 3, 97, 33)]:
        parity = parity_check(tiny_model, session, torch.randn(*shape))
        assert parity.input_shape == shape
        assert parity.max_abs_diff < 1e-4
        assert parity.argmax_agreement >= 0.999


def test_fixed_size_export_declares_its_size(tiny_model: torch.nn.Module) -> None:
    buffer = io.BytesIO()
    export_onnx(tiny_model, buffer, input_size=(40, 56))
    session = onnx_session(buffer.getvalue())
    assert session.get_inputs()[0].shape[1:] == [3, 40, 56]
    assert parity_check(tiny_model, session, torch.randn(3, 3, 40, 56)).max_abs_diff < 1e-4


def test_a_model_exported_mid_training_trains_on_as_before() -> None:
    """export_onnx left a training model in eval mode (BatchNorm frozen, no dropout for the steps after) and drew
    its example input from the global RNG, so a seeded run that exported drew other batches."""
    model = build_model(num_classes=3, width_mult=0.25).train()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    export_onnx(model, io.BytesIO())
    assert all(module.training for module in model.modules())
    assert torch.equal(torch.rand(3), expected)


def test_exports_on_threads_at_once_all_succeed(tiny_model: torch.nn.Module) -> None:
    """torch.onnx.export keeps global state: engines prepared on parallel threads failed with
    'GLOBALS.in_onnx_export must be False'."""
    buffers = [io.BytesIO() for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(len(buffers)) as pool:
        for done in [pool.submit(export_onnx, tiny_model, buffer) for buffer in buffers]:
            done.result()
    assert all(parity_check(tiny_model, onnx_session(b.getvalue()), torch.randn(1, 3, 20, 30)).max_abs_diff < 1e-4
               for b in buffers)


def test_int8_scales_are_finite_behind_size_keeping_max_pools() -> None:
    """BlazeNet's shortcuts pad odd maps before a 2x2 max-pool; int8 calibration records the padded map's range."""
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(0)
    buffer = io.BytesIO()
    export_onnx(build_model(backbone="blazenet", num_classes=3).eval(), buffer)
    quantized = onnx.load_from_string(quantize_int8(buffer.getvalue(), [torch.randn(1, 3, 45, 77)]))
    scales = {init.name: numpy_helper.to_array(init) for init in quantized.graph.initializer
              if init.name.endswith("_scale")}
    assert scales and all(np.isfinite(scale).all() for scale in scales.values()), \
        [name for name, scale in scales.items() if not np.isfinite(scale).all()]


def test_int8_of_a_layer_norm_logs_no_warning_per_weight(caplog: pytest.LogCaptureFixture) -> None:
    """MobileViT's LayerNorm weights have no channel axis; ONNX Runtime logged one warning line for each."""

    class ConvLayerNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    buffer = io.BytesIO()
    export_onnx(ConvLayerNorm().eval(), buffer)
    with caplog.at_level(logging.WARNING):
        quantize_int8(buffer.getvalue(), [torch.randn(1, 3, 16, 16)])
    assert not caplog.records and logging.getLogger().level == logging.WARNING
