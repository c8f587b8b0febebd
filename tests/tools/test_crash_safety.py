"""A training process killed (SIGKILL) at random moments always leaves a loadable last.pt, and resumes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datasets.voc import split_file
from deeplab.checkpoint import load_checkpoint, model_from_checkpoint

REPO = Path(__file__).resolve().parents[2]
KILLS = 5


def start_training(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A real training process that validates and saves after every step."""
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "--dataset", "demo", "--data-root", str(root),
           "--val-split", "val1", "--iters", "10000", "--val-every", "1", "--crop-size", "32", "--batch-size", "1",
           "--workers", "0", "--no-progress", "--out", str(out), *extra]
    # One thread: tiny steps gain nothing from two, and spinning threads crawl on a busy machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_save(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until ``path`` is (re)written by ``process``: killing a process still importing torch tests nothing."""
    before = path.stat().st_mtime_ns if path.exists() else None
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_mtime_ns == before:
        assert process.poll() is None, f"training exited early: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} was not written within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint(tmp_path, demo_root):
    root = demo_root
    split_file(root, "val1").write_text("val_0000\n")
    out, last = tmp_path / "run", tmp_path / "run" / "last.pt"
    rng = random.Random(1234)
    steps = []
    for kill in range(KILLS):
        process = start_training(root, out, *(["--resume", str(last)] if kill else []))
        try:
            wait_for_save(last, process)
            time.sleep(rng.uniform(0.0, 1.5))  # lands anywhere: mid-step, mid-validation, mid-save
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        ckpt = load_checkpoint(last)
        model_from_checkpoint(ckpt, last)
        steps.append(ckpt["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each resume went on from the last save

    final = start_training(root, out, "--resume", str(last), "--iters", str(steps[-1] + 2))
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert load_checkpoint(last)["step"] == steps[-1] + 2


def test_sigterm_before_the_first_checkpoint_stops_like_ctrl_c_and_leaves_no_folder(tmp_path, demo_root):
    split_file(demo_root, "val1").write_text("val_0000\n")
    out = tmp_path / "run"
    process = start_training(demo_root, out, "--val-every", "10000")  # the last flag wins: no checkpoint
    try:
        wait_for_save(out / "metrics.jsonl", process)
    finally:
        process.send_signal(signal.SIGTERM)  # a batch scheduler's stop
    assert process.wait(timeout=60) == 130
    assert process.stderr.read() == f"interrupted: no checkpoint was written to {out}\n"
    assert not out.exists()  # the same command can run again
