"""tools/export.py: writes the ONNX file and prints its parity with PyTorch; a missing checkpoint is one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools import export as export_tool


def test_export_tool_writes_file_and_prints_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
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
