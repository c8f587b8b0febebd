"""ONNX export: dynamic batch and odd spatial sizes match PyTorch under ONNX Runtime; the export tool's CLI."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from deeplab.checkpoint import save_checkpoint
from deeplab.export import export_onnx, onnx_session, parity_check
from deeplab.model import build_model
from tools import export as export_tool


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


def test_export_tool_writes_file_and_prints_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model(num_classes=3, width_mult=0.25)
    save_checkpoint({"model": model.state_dict(), "model_config": model.config}, tmp_path / "best.pt")
    out = tmp_path / "out" / "model.onnx"
    assert export_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 100_000
    printed = capsys.readouterr().out
    assert "parity on 1x3x97x131: max abs logit diff" in printed
    agreement = float(printed.split("argmax agreement ")[1].split("%")[0])
    assert agreement >= 99.9


def test_export_tool_reports_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = export_tool.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
