"""The one error reporter of every tool: user errors, Ctrl-C, dead data-loader workers and full disks as one line."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from datasets import DataError
from deeplab.errors import Interrupted, RunWideError, report_user_errors


def run(body, capsys) -> tuple[int, list[str]]:
    """``body`` as a tool's main; its exit status and its stderr lines."""
    rc = report_user_errors(lambda argv: body())(None)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_user_errors_are_one_line_and_exit_2(capsys):
    def bad_data():
        raise DataError("data/x.png: mask is empty")

    assert run(bad_data, capsys) == (2, ["error: data/x.png: mask is empty"])


def test_ctrl_c_exits_130_saying_what_was_kept(capsys):
    def stopped():
        raise Interrupted("runs/x/last.pt (step 40) is the last good checkpoint")

    assert run(stopped, capsys) == (130, ["interrupted: runs/x/last.pt (step 40) is the last good checkpoint"])

    def plain_ctrl_c():
        raise KeyboardInterrupt

    assert run(plain_ctrl_c, capsys) == (130, ["interrupted (Ctrl-C)"])


class KilledInWorker(Dataset):
    """Every item kills the worker process loading it, as the kernel's OOM killer would (SIGKILL)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(1)


def test_a_data_loader_worker_killed_by_the_oom_killer_is_one_line(capsys):
    def load():
        for _ in DataLoader(KilledInWorker(), num_workers=1):
            pass

    rc, lines = run(load, capsys)
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith("error: data loading: worker process ") and "out of memory" in lines[0]
    assert "--workers" in lines[0]


def test_a_full_disk_behind_a_runtime_error_is_one_line(capsys):
    def write():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "runs/x/curves.png")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    assert run(write, capsys) == (2, ["error: runs/x/curves.png: cannot write (No space left on device)"])


def test_a_reader_that_goes_away_ends_the_tool_quietly():
    """``tool | head`` with unbuffered output (PYTHONUNBUFFERED=1, as in many containers): no traceback."""
    tool = ("import sys\nfrom deeplab.errors import report_user_errors\n"
            "sys.exit(report_user_errors(lambda argv: [print(i) for i in range(10 ** 6)] and 0)())")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with subprocess.Popen([sys.executable, "-c", tool], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as child:
        assert child.stdout.readline() == b"0\n"
        child.stdout.close()  # what `head -1` does after its line
        assert child.wait(timeout=60) == 141
        assert child.stderr.read() == b""


def test_a_file_name_stdout_cannot_encode_is_printed_escaped():
    """A Linux name of Latin-1 bytes (``caf\\xe9.jpg``) under a UTF-8 terminal, whose stdout is strict."""
    tool = ("import os, sys\nfrom deeplab.errors import report_user_errors\n"
            "sys.exit(report_user_errors(lambda argv: print(os.fsdecode(b'caf\\xe9.jpg -> done')) or 0)())")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", tool], capture_output=True, env=env, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"caf\\udce9.jpg -> done\n", b"")


def test_other_errors_keep_their_traceback(capsys):
    def bug():
        raise RuntimeError("a programming error")

    with pytest.raises(RuntimeError, match="a programming error"):
        run(bug, capsys)


def test_under_torchrun_only_each_machines_first_rank_repeats_a_shared_line(capsys, monkeypatch):
    def bad_flag():
        raise DataError("--lr: must be 0 or more, got -1.0")

    def stopped():
        raise Interrupted("runs/x/last.pt (step 6) is the last good checkpoint")

    monkeypatch.setenv("LOCAL_RANK", "1")  # a second process of the machine, before the ranks joined
    assert run(bad_flag, capsys) == (2, []) and run(stopped, capsys) == (130, [])
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # after: the error may be its own
    assert run(bad_flag, capsys) == (2, ["error: --lr: must be 0 or more, got -1.0"])

    def diverged():
        raise RunWideError("training stopped at step 7: the loss is nan")

    assert run(diverged, capsys) == (2, [])  # unless every rank meets it alike
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    assert run(bad_flag, capsys) == (2, ["error: --lr: must be 0 or more, got -1.0"])
    assert run(stopped, capsys) == (130, ["interrupted: runs/x/last.pt (step 6) is the last good checkpoint"])
    assert run(diverged, capsys) == (2, ["error: training stopped at step 7: the loss is nan"])
