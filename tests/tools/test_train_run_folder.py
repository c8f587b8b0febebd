"""tools/train.py and its output folder: a run never replaces another run's files, a resume writes beside its
checkpoint, one process per folder, and every way a run can stop (Ctrl-C, a full or read-only disk, a bad flag)
ends in one line that says what was kept."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import DataError
from datasets.voc import split_file
from deeplab import build_model
from deeplab.checkpoint import load_checkpoint
from deeplab.engine.run_dir import LOCK_NAME, RUN_FILES, RunLock
from tools import train as train_tool

REPO = Path(__file__).resolve().parents[2]
FAST = ["--crop-size", "32", "--batch-size", "2", "--workers", "0", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> Path:
    """The demo dataset with a two-image validation split, so each validation takes a moment."""
    split_file(demo_root, "val2").write_text("val_0000\nval_0001\n")
    return demo_root


def demo_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "demo", "--data-root", str(root), "--val-split", "val2", *FAST, *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow  # several real trainings; the library tests check the rule quickly
def test_running_the_same_command_twice_keeps_the_first_run(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_tool.main(demo_args(demo, "--iters", "2", "--val-every", "1")) == 0
    first = Path("runs/demo_mobilenetv2_os16")
    before = snapshot(first)
    assert train_tool.main(demo_args(demo, "--iters", "1")) == 0
    assert f"files in {first.with_name('demo_mobilenetv2_os16-2')}" in capsys.readouterr().out
    assert snapshot(first) == before and load_checkpoint(first.with_name("demo_mobilenetv2_os16-2") / "last.pt")
    assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(first))) == 2  # asked for: refused
    assert one_error_line(capsys) == (f"error: {first}: holds another run (last.pt, best.pt, metrics.jsonl, "
                                      f"curves.png); continue it with --resume {first / 'last.pt'}, or pass --out "
                                      "with a new folder")
    assert snapshot(first) == before


def test_a_folder_in_use_by_another_training_is_refused(demo, tmp_path, capsys):
    other = RunLock(tmp_path / "run").acquire()  # another training holds the folder
    try:
        assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(tmp_path / "run"))) == 2
    finally:
        other.release()
    assert f"run: in use by another training (pid {os.getpid()} on " in one_error_line(capsys)
    assert not (tmp_path / "run").exists()  # nothing was written beside the lock, which took its folder along


def test_every_file_a_run_writes_takes_its_folder(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(out), "--tensorboard")) == 0
    written = {p.name for p in out.iterdir()}
    assert written == set(RUN_FILES)
    capsys.readouterr()
    for name in written:  # each alone, e.g. a user's own curves.png, is never replaced
        user = tmp_path / f"user_{name}"
        user.mkdir()
        shutil.move(out / name, user / name)
        assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(user))) == 2
        assert one_error_line(capsys).startswith(f"error: {user}: holds ")
        assert {p.name for p in user.iterdir()} == {name}


def test_a_run_that_fails_before_its_first_checkpoint_can_be_run_again(tmp_path, make_voc_folder, capsys):
    bad = np.zeros((36, 36), np.uint8)
    bad[8:20, 8:20] = 7  # no such class: found when the first batch is read
    make_voc_folder(tmp_path / "data", {"a": bad, "b": bad}, classes=["background", "object"])
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--val-split", "train", "--pretrained-backbone",
            "none", "--iters", "1", "--out", str(tmp_path / "run"), *FAST]
    for _ in range(2):  # the same command, and the same error, again
        assert train_tool.main(args) == 2
        assert "label values [7] outside 0..1" in one_error_line(capsys)
        assert not (tmp_path / "run").exists()


@pytest.mark.slow  # several real trainings; the library tests check the rule quickly
def test_resuming_a_copied_run_writes_into_the_copy(demo, tmp_path):
    assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(tmp_path / "orig"))) == 0
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    before = snapshot(tmp_path / "orig")
    assert train_tool.main(["--resume", str(tmp_path / "copy" / "last.pt"), "--iters", "2", *FAST]) == 0
    assert snapshot(tmp_path / "orig") == before
    copy = load_checkpoint(tmp_path / "copy" / "last.pt")
    assert copy["step"] == 2 and copy["args"]["out"] == str(tmp_path / "copy")


@pytest.mark.slow  # several real trainings; the library tests check the rule quickly
def test_resuming_with_renamed_classes_needs_the_flag(demo, tmp_path, capsys):
    assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(tmp_path / "run"))) == 0
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ckpt["class_names"][1] = "disc"
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    resume = ["--resume", str(tmp_path / "run" / "last.pt"), "--iters", "2", *FAST]
    assert train_tool.main(resume) == 2
    assert "class 1 is 'disc' in the checkpoint but 'circle' in" in one_error_line(capsys)
    assert train_tool.main([*resume, "--ignore-class-names"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["class_names"][1] == "circle"  # the data's names


def test_ctrl_c_says_which_checkpoint_is_the_last_good_one(demo, tmp_path, failing_train_step, capsys):
    out = tmp_path / "run"
    with failing_train_step(3, KeyboardInterrupt):
        assert train_tool.main(demo_args(demo, "--iters", "6", "--val-every", "2", "--out", str(out))) == 130
    last = out / "last.pt"
    assert one_error_line(capsys) == (f"interrupted: {last} (step 2) is the last good checkpoint; continue with "
                                      f"--resume {last}")
    assert not (out / LOCK_NAME).exists() and load_checkpoint(last)["step"] == 2


def test_an_error_after_a_checkpoint_names_the_last_good_one(demo, tmp_path, failing_train_step, capsys):
    """A bad image met at step 5000 is one line, and a crash (a bug, out of memory) a traceback: both say where the
    run can go on from."""
    out, last = tmp_path / "run", tmp_path / "run" / "last.pt"
    args = demo_args(demo, "--iters", "6", "--val-every", "2", "--out", str(out))
    with failing_train_step(3, DataError("photo.jpg: corrupt or truncated image")):
        assert train_tool.main(args) == 2
    assert one_error_line(capsys) == (f"error: photo.jpg: corrupt or truncated image; {last} (step 2) is the last "
                                      f"good checkpoint; continue with --resume {last}")
    with failing_train_step(2, MemoryError("out of memory")), pytest.raises(MemoryError):
        train_tool.main(["--resume", str(last), "--iters", "4", "--val-every", "1", *FAST])  # after step 3 is saved
    assert one_error_line(capsys) == (f"note: training stopped on the error below; {last} (step 3) is the last good "
                                      f"checkpoint; continue with --resume {last}")


def test_ctrl_c_of_a_resumed_run_before_its_first_checkpoint_names_the_resumed_one(demo, tmp_path,
                                                                                failing_train_step, capsys):
    resumed = tmp_path / "A" / "last.pt"
    assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(resumed.parent))) == 0
    capsys.readouterr()
    out = tmp_path / "sig3"
    with failing_train_step(1, KeyboardInterrupt):
        assert train_tool.main(["--resume", str(resumed), "--iters", "3", "--out", str(out), *FAST]) == 130
    assert one_error_line(capsys) == (f"interrupted: no checkpoint of this run was written to {out}; {resumed} is "
                                      f"still the last good checkpoint; continue with --resume {resumed} --out {out}")
    assert not out.exists()


@pytest.mark.slow  # several real trainings; the library tests check the rule quickly
def test_validation_batches_of_mixed_image_sizes(tmp_path, make_voc_folder):
    rng = np.random.default_rng(0)
    masks = {f"m{i}": rng.integers(0, 2, shape).astype(np.uint8)
             for i, shape in enumerate([(40, 52), (52, 40), (40, 52), (36, 36), (52, 40)])}
    make_voc_folder(tmp_path / "data", masks, classes=["background", "thing"])
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--val-split", "train", "--pretrained-backbone",
            "none", "--iters", "1", *FAST]
    for batch in ("1", "2"):
        assert train_tool.main([*args, "--val-batch-size", batch, "--out", str(tmp_path / batch)]) == 0
    one, two = (load_checkpoint(tmp_path / batch / "last.pt")["scores"] for batch in ("1", "2"))
    assert one == two


@pytest.mark.parametrize(("flag", "value"), [("--workers", "-1"), ("--lr", "-1"), ("--lr", "nan")])
def test_numbers_no_run_can_use_are_one_line(flag, value, demo, tmp_path, capsys):
    assert train_tool.main(demo_args(demo, "--iters", "1", "--out", str(tmp_path / "run"), flag, value)) == 2
    assert one_error_line(capsys).startswith(f"error: {flag}: must be")
    assert not (tmp_path / "run").exists()


def train_command(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "tools" / "train.py"), *demo_args(root, "--out", str(out), *extra)]


def run_quietly(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(demo, tmp_path, tmpfs_command):
    model = build_model(num_classes=5)
    params = sum(p.numel() for p in model.parameters())
    checkpoint_bytes = 4 * (2 * params + sum(b.numel() for b in model.buffers()))  # weights + SGD momentum
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for the first validation's best.pt and last.pt, not for a third checkpoint.
    size = f"size={int(2.5 * checkpoint_bytes) // 1024}k"
    result = run_quietly(tmpfs_command(disk, size, train_command(demo, disk / "run", "--iters", "4",
                                                                 "--val-every", "1")))
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.fullmatch(rf"error: {disk}/run/(best|last)\.pt: cannot write checkpoint \(No space left on device\); "
                        rf"the previous one is kept; {disk}/run/last\.pt \(step 1\) is the last good checkpoint; "
                        rf"continue with --resume {disk}/run/last\.pt", result.stderr.strip()), result.stderr[-2000:]


@pytest.mark.slow
def test_demo_data_on_a_read_only_disk_is_one_line(demo, tmp_path, tmpfs_command):
    disk = tmp_path / "disk"
    disk.mkdir()
    command = train_command(demo, tmp_path / "run", "--iters", "1")
    command[command.index("--data-root") + 1] = str(disk / "demo")
    result = run_quietly(tmpfs_command(disk, "ro", command))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {disk / 'demo'}: cannot write the demo data here (Read-only file "
                                     "system); pass --data-root a writable folder")


@pytest.mark.slow
def test_a_real_ctrl_c_exits_130_naming_the_last_good_checkpoint(demo, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A shell starts background jobs with SIGINT ignored, and a child inherits that: give the trainer the default
    # disposition, as a terminal's Ctrl-C finds it, whatever way the suite itself was started.
    process = subprocess.Popen(train_command(demo, out, "--iters", "10000", "--val-every", "1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    step = load_checkpoint(out / "last.pt")["step"]
    assert line == f"interrupted: {out / 'last.pt'} (step {step}) is the last good checkpoint; continue with " \
                   f"--resume {out / 'last.pt'}"
    assert not (out / LOCK_NAME).exists()
