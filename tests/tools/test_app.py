"""tools/app.py: serves the checkpoint on 127.0.0.1 unless told otherwise; without Gradio, one line saying how."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools import app as app_tool


def test_binds_to_localhost_by_default(tmp_path: Path, make_checkpoint, monkeypatch, capsys) -> None:
    pytest.importorskip("gradio", reason="the web app needs Gradio: pip install -e '.[app]'")
    from deeplab.app import web

    make_checkpoint(tmp_path / "best.pt", ["background", "cat"], num_classes=2)
    served = {}
    monkeypatch.setattr(web, "launch", lambda app, **kwargs: served.update(kwargs, app=app))
    assert app_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--engine", "torch", "--output-stride", "8"]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] is None and served["limits"].max_upload_mb == 20
    header = served["app"].config["components"][0]["props"]["value"]
    assert "engine** torch" in header and "output stride 8" in header
    assert "audio of clips is not kept" in capsys.readouterr().out


def test_without_gradio_one_line_says_how_to_install(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    monkeypatch.delitem(sys.modules, "deeplab.app.web", raising=False)
    assert app_tool.main(["--checkpoint", str(tmp_path / "absent.pt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install -e ".[app]"' in err


@pytest.mark.parametrize("flag, problem", [("--max-size=-5", "--max-size -5: must be a number of pixels"),
                                           ("--alpha=1.5", "--alpha 1.5: must lie between 0 and 1")])
def test_bad_image_flags_are_one_line_before_loading(flag: str, problem: str, tmp_path: Path, capsys) -> None:
    assert app_tool.main(["--checkpoint", str(tmp_path / "absent.pt"), flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}") and len(err.strip().splitlines()) == 1, err
