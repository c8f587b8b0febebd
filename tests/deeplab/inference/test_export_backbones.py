"""ONNX export of DeepLabV3+ on every backbone family added beside the MobileNets, ShuffleNetV2 and Xception:
traced at one size, ONNX Runtime gives PyTorch's logits at odd, unequal sizes and another batch size."""
from __future__ import annotations

import io

import pytest
import torch

from backbones import list_backbones
from deeplab.inference.export import DYNAMIC_PARITY_SIZE, export_onnx, onnx_session, parity_check
from deeplab.models import build_model


NAMES = [name for name in list_backbones() if name.startswith(("blazenet", "inception", "mobilenetv4", "mobilevit",
                                                                 "shufflenetv1"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_runtime_matches_pytorch_at_odd_sizes(name: str, randomise_batchnorm) -> None:
    model = randomise_batchnorm(build_model(backbone=name, num_classes=4))
    buffer = io.BytesIO()
    export_onnx(model, buffer)  # traced at 64x64
    session = onnx_session(buffer.getvalue())
    for shape in [(1, 3, *DYNAMIC_PARITY_SIZE), (2, 3, 45, 77)]:
        batch = torch.randn(*shape)
        parity = parity_check(model, session, batch)
        with torch.no_grad():
            scale = float(model(batch).abs().max())  # random BatchNorm statistics can blow logits up to 1e4
        assert parity.max_abs_diff < 1e-5 * max(1.0, scale), f"{name} at {shape}"
        assert parity.argmax_agreement >= 0.999
