"""metrics.jsonl survives a torn last line or a hand edit and truncates on resume; the curves plot is a PNG, replaced
whole or not at all."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from deeplab.engine.metrics_log import MetricsLog, plot_curves


def test_metrics_log_reset_truncates_and_survives_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        log.append({"step": step, "loss": 1.0 / step})
    with log.path.open("a") as f:
        f.write('{"step": 6, "lo')  # a write cut off by a crash
    assert [r["step"] for r in log.read()] == [1, 2, 3, 4, 5]
    log.reset(keep_until=3)
    log.append({"step": 4, "loss": 0.1, "miou": 0.5})
    assert [json.loads(line)["step"] for line in log.path.read_text().splitlines()] == [1, 2, 3, 4]
    plot_curves(log.read(), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_log_edited_by_hand_resumes_and_plots(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.path.write_text('{"step": 1, "loss": 0.9}\n5\n["step", 2]\n{"step": "2", "loss": 0.8}\n{"loss": 0.7}\n'
                        '{"step": 3, "loss": null, "miou": "n/a"}\n{"step": 4, "loss": 0.5, "miou": 0.4}\n')
    log.reset(keep_until=4)  # a resume: every line that is not a record of a step is dropped, none is fatal
    assert [r["step"] for r in log.read()] == [1, 3, 4]
    plot_curves(log.read(), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_stopped_midway_keeps_the_previous_picture_and_leaves_nothing_else(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "loss": 1.0})
    plot_curves(log.read(), tmp_path / "curves.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def stopped(self, target, **kwargs):  # Ctrl-C (or SIGTERM) while the PNG is half written
        with open(target, "wb") if isinstance(target, (str, Path)) else contextlib.nullcontext(target) as handle:
            handle.write(b"\x89PNG\r\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped)
    with pytest.raises(KeyboardInterrupt):
        plot_curves(log.read(), tmp_path / "curves.png")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
