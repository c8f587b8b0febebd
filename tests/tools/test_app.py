"""tools/app.py: serves the checkpoint on 127.0.0.1 unless told otherwise; without Gradio, one line saying how;
server flags no server can use are one line before the model loads; SIGTERM stops it as Ctrl-C does."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def test_int8_engines_calibrate_on_the_calibration_folder(tmp_path: Path, make_checkpoint, monkeypatch,
                                                         capsys) -> None:
    """Without the checkpoint's training data, the error's advice (--calibration DIR) is a flag the app takes."""
    pytest.importorskip("gradio", reason="the web app needs Gradio: pip install -e '.[app]'")
    from deeplab.app import web

    make_checkpoint(tmp_path / "best.pt", ["background", "cat"], num_classes=2)
    served = {}
    monkeypatch.setattr(web, "launch", lambda app, **kwargs: served.update(kwargs, app=app))
    args = ["--checkpoint", str(tmp_path / "best.pt"), "--engine", "int8"]
    assert app_tool.main(args) == 2
    assert "pass --calibration DIR" in capsys.readouterr().err and not served
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
        tmp_path / "photos" / "a.png")
    assert app_tool.main([*args, "--calibration", str(tmp_path / "photos")]) == 0
    assert "engine** int8" in served["app"].config["components"][0]["props"]["value"]


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


@pytest.mark.parametrize("flag, problem", [
    ("--port=-1", "--port -1: must lie between 1 and 65535"),
    ("--port=99999", "--port 99999: must lie between 1 and 65535"),
    ("--port=BUSY", "--port BUSY: cannot serve there (Address already in use)"),
    ("--max-upload-mb=-5", "--max-upload-mb: must be at least 1, got -5"),
    ("--max-upload-mb=99999999999999999999", "--max-upload-mb: must be at most 1000000, got 99999999999999999999"),
    ("--max-video-frames=-1", "--max-video-frames: must be at least 1, got -1"),
    ("--host=256.1.1.1", "--host 256.1.1.1: not an address or a known host name"),
])
def test_bad_server_flags_are_one_line_before_loading(flag: str, problem: str, tmp_path: Path, capsys) -> None:
    with socket.socket() as busy:  # a port another program listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        # The absent checkpoint would be the error if the flags were checked after loading it.
        assert app_tool.main(["--checkpoint", str(tmp_path / "absent.pt"), flag.replace("BUSY", port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem.replace('BUSY', port)}") and len(err.strip().splitlines()) == 1, err


# tools/app.py with a launch that prints the result folder and serves nothing until the process is stopped.
SERVE_UNTIL_STOPPED = """
import sys, time
import app as app_tool  # tools/ is on PYTHONPATH
from deeplab.app import web

def launch(app, **kwargs):
    print(app.segmenter.results.root, flush=True)
    while True:
        time.sleep(0.05)

web.launch = launch
sys.exit(app_tool.main(sys.argv[1:]))
"""


def test_sigterm_stops_the_app_as_ctrl_c_does_and_removes_its_results(tmp_path: Path, make_checkpoint) -> None:
    """kill, docker stop and systemctl stop send SIGTERM, which by default ends Python without any cleanup."""
    pytest.importorskip("gradio", reason="the web app needs Gradio: pip install -e '.[app]'")
    make_checkpoint(tmp_path / "best.pt", ["background", "cat"], num_classes=2)
    command = [sys.executable, "-c", SERVE_UNTIL_STOPPED, "--checkpoint", str(tmp_path / "best.pt"),
               "--engine", "torch"]
    env = {**os.environ, "PYTHONPATH": str(Path(app_tool.__file__).parent), "OMP_NUM_THREADS": "1"}
    app = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = iter(app.stdout.readline, "")
        results = next((Path(line.strip()) for line in lines if line.startswith("/")), None)
        assert results is not None, app.stderr.read()
        assert results.is_dir() and results.name.startswith("deeplab-app-")
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 130 and "interrupted: stopped by SIGTERM" in app.stderr.read()
        assert not results.exists()
    finally:
        app.kill()
        app.communicate()
