"""Run folders: one run per folder (numbered defaults, resumes beside their checkpoint, never over a later state or
another run), one process per run (a lock that dies with its owner)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deeplab.engine import run_dir
from deeplab.engine.run_dir import LOCK_NAME, FolderInUse, RunLock, claim_run_dir, last_good_checkpoint, read_resumed
from deeplab.errors import UserError

REPO = Path(__file__).resolve().parents[3]


def fake_run(folder: Path, step: int) -> dict[str, bytes]:
    """A folder holding a run's files (a checkpoint that records its step); returns their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "weights": torch.zeros(3)}, folder / "last.pt")
    (folder / "best.pt").write_bytes((folder / "last.pt").read_bytes())
    (folder / "metrics.jsonl").write_text("".join(f'{{"step": {s}}}\n' for s in range(1, step + 1)))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_new_run_never_starts_in_a_folder_holding_another(tmp_path):
    before = fake_run(tmp_path / "run", step=40)
    with pytest.raises(UserError) as refused, claim_run_dir(tmp_path / "run", default=tmp_path / "unused"):
        pass
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'run'}: holds another run") and f"--resume {tmp_path / 'run' / 'last.pt'}" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before  # untouched, no lock left


def test_a_folder_left_by_a_run_killed_before_its_first_checkpoint_says_so(tmp_path):
    """SIGKILL leaves no chance to clean up: the folder holds a log but nothing to resume, and is kept."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 5}\n')
    with pytest.raises(UserError) as refused, claim_run_dir(tmp_path / "run", default=tmp_path / "unused"):
        pass
    assert str(refused.value) == (f"{tmp_path / 'run'}: holds a run that has no checkpoint (metrics.jsonl: stopped "
                                  "before its first one, or its checkpoints were removed), so there is nothing to "
                                  "resume; move its files away, or pass --out with a new folder")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 5}\n'


def test_without_a_folder_the_first_free_numbered_one_is_taken(tmp_path):
    default = tmp_path / "runs" / "demo_mobilenetv2_os16"
    fake_run(default, step=3)
    with claim_run_dir(None, default=default) as first:
        assert first == default.with_name("demo_mobilenetv2_os16-2")
        assert (first / LOCK_NAME).is_file()
        with claim_run_dir(None, default=default) as second:  # -2 is locked by the run above
            assert second == default.with_name("demo_mobilenetv2_os16-3")
    assert not (first / LOCK_NAME).exists() and not (second / LOCK_NAME).exists()
    with claim_run_dir(None, default=default) as again:  # -2 holds no run files: free again
        assert again == first


def test_a_resume_writes_beside_its_checkpoint_never_into_another_run(tmp_path):
    fake_run(tmp_path / "orig", step=10)
    fake_run(tmp_path / "copy", step=10)
    with claim_run_dir(None, default=tmp_path / "x", resume_path=tmp_path / "copy" / "last.pt",
                       resume_step=10) as folder:
        assert folder == tmp_path / "copy"
    with claim_run_dir(tmp_path / "new", default=tmp_path / "x", resume_path=tmp_path / "copy" / "last.pt",
                       resume_step=10) as folder:
        assert folder == tmp_path / "new"
    with pytest.raises(UserError, match="holds another run.*--out with a new folder"), claim_run_dir(
            tmp_path / "orig", default=tmp_path / "x", resume_path=tmp_path / "copy" / "last.pt", resume_step=10):
        pass


def test_a_renamed_checkpoint_never_resumes_over_the_run_files_beside_it(tmp_path):
    """models/ holds deeplab.pt (a run's checkpoint, renamed) beside another run's last.pt at an earlier step: the
    resume would replace that file and mix both runs' logs."""
    before = fake_run(tmp_path / "models", step=4)
    torch.save({"step": 6}, tmp_path / "models" / "deeplab.pt")
    before["deeplab.pt"] = (tmp_path / "models" / "deeplab.pt").read_bytes()
    with pytest.raises(UserError) as refused, claim_run_dir(None, default=tmp_path / "x", resume_step=6,
                                                            resume_path=tmp_path / "models" / "deeplab.pt"):
        pass
    assert str(refused.value).startswith(f"{tmp_path / 'models'}: holds another run (last.pt, best.pt, metrics.jsonl)"
                                         ", and deeplab.pt is not one of its checkpoints")
    assert str(refused.value).endswith(f"pass --out with a new folder to continue {tmp_path / 'models' / 'deeplab.pt'} "
                                       "there")
    assert {p.name: p.read_bytes() for p in (tmp_path / "models").iterdir()} == before
    (tmp_path / "models" / "last.pt").unlink()
    (tmp_path / "models" / "best.pt").unlink()
    (tmp_path / "models" / "metrics.jsonl").unlink()
    with claim_run_dir(None, default=tmp_path / "x", resume_path=tmp_path / "models" / "deeplab.pt",
                       resume_step=6) as folder:  # alone in its folder, it continues there
        assert folder == tmp_path / "models"


@pytest.mark.parametrize("name", ["curves.png", "tensorboard"])
def test_a_folder_holding_any_file_a_run_writes_is_taken(tmp_path, name):
    user = tmp_path / "mine"
    user.mkdir()
    if name == "tensorboard":
        (user / name).mkdir()
    else:
        (user / name).write_text("the user's")
    before = {p.name for p in user.iterdir()}
    fake_run(tmp_path / "run", step=3)
    for resume in (None, tmp_path / "run" / "last.pt"):  # a new run, and a resumed one asked to write there
        refused = f"^{user}: holds {name}/?, which a run writes; .*--out with a new folder"
        with pytest.raises(UserError, match=refused), claim_run_dir(user, default=tmp_path / "x",
                                                                    resume_path=resume, resume_step=3):
            pass
    assert {p.name for p in user.iterdir()} == before
    with claim_run_dir(None, default=user) as folder:  # the default name moves on to the next free one
        assert folder == tmp_path / "mine-2"


def write_run_files(folder: Path) -> None:
    """What a run writes before its first checkpoint: its log, and TensorBoard events."""
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events").write_text("e")


def test_a_run_stopped_before_its_first_checkpoint_leaves_no_trace(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(KeyboardInterrupt), claim_run_dir(out, default=tmp_path / "x"):
        write_run_files(out)
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()  # the folders it created are gone too: the retry starts afresh
    with pytest.raises(UserError, match="bad label"), claim_run_dir(None, default=tmp_path / "runs" / "r") as folder:
        write_run_files(folder)
        raise UserError("bad label")
    with claim_run_dir(None, default=tmp_path / "runs" / "r") as again:
        assert again == folder  # its default name is free again


def test_a_stopped_run_keeps_what_it_did_not_create_and_what_followed_a_checkpoint(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt), claim_run_dir(mine, default=tmp_path / "x"):
        write_run_files(mine)
        raise KeyboardInterrupt
    assert {p.name for p in mine.iterdir()} == {"notes.txt"}
    fake_run(tmp_path / "run", step=3)
    log = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with pytest.raises(KeyboardInterrupt), claim_run_dir(None, default=tmp_path / "x",
                                                         resume_path=tmp_path / "run" / "last.pt", resume_step=3):
        (tmp_path / "run" / "tensorboard").mkdir()
        raise KeyboardInterrupt
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"last.pt", "best.pt", "metrics.jsonl"}
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == log
    with pytest.raises(KeyboardInterrupt), claim_run_dir(tmp_path / "saved", default=tmp_path / "x"):
        write_run_files(tmp_path / "saved")
        torch.save({"step": 2}, tmp_path / "saved" / "last.pt")
        raise KeyboardInterrupt
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {"metrics.jsonl", "tensorboard", "last.pt"}


def test_resuming_an_older_checkpoint_beside_a_newer_last_pt_is_refused(tmp_path):
    fake_run(tmp_path / "run", step=30)
    torch.save({"step": 20}, tmp_path / "run" / "best.pt")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"last.pt: is at step 30, past .*best.pt \(step 20\)"), claim_run_dir(
            None, default=tmp_path / "x", resume_path=tmp_path / "run" / "best.pt", resume_step=20):
        pass
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    torch.save({"step": 30}, tmp_path / "run" / "best.pt")  # best is the last state: nothing is lost
    with claim_run_dir(None, default=tmp_path / "x", resume_path=tmp_path / "run" / "best.pt", resume_step=30):
        pass


def test_a_second_process_is_kept_out_while_the_first_holds_the_lock(tmp_path):
    first = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(FolderInUse, match=r"in use by another training \(pid \d+"):
            RunLock(tmp_path).acquire()
    finally:
        first.release()
    RunLock(tmp_path).acquire().release()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "pid-only"])
def test_a_lock_left_by_a_dead_process_is_cleared(tmp_path, monkeypatch, flock):
    if not flock:  # filesystems (or systems) without flock: the recorded pid decides
        monkeypatch.setattr(run_dir, "fcntl", None)
    stale = {"pid": dead_pid(), "host": run_dir.socket.gethostname(), "started": time.time() - 60}
    (tmp_path / LOCK_NAME).write_text(run_dir.json.dumps(stale))
    lock = RunLock(tmp_path).acquire()
    assert run_dir.json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == run_dir.os.getpid()
    lock.release()
    if not flock:
        live = {**stale, "pid": run_dir.os.getppid()}
        (tmp_path / LOCK_NAME).write_text(run_dir.json.dumps(live))
        with pytest.raises(FolderInUse, match=f"pid {live['pid']}"):
            RunLock(tmp_path).acquire()


HOLD_LOCK = """
import sys, time
sys.path.insert(0, sys.argv[1])
from deeplab.engine.run_dir import RunLock
RunLock(sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_lock_held_by_another_live_process_refuses_then_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(REPO), str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays behind
        holder.wait()
    assert (tmp_path / LOCK_NAME).is_file()
    RunLock(tmp_path).acquire().release()


def test_last_good_checkpoint_names_the_file_and_its_step(tmp_path):
    assert "no checkpoint was written" in last_good_checkpoint(tmp_path)
    fake_run(tmp_path, step=7)
    assert last_good_checkpoint(tmp_path).startswith(f"{tmp_path / 'last.pt'} (step 7) is the last good checkpoint")


def test_last_good_checkpoint_is_best_pt_when_a_run_stopped_between_the_two_writes(tmp_path):
    fake_run(tmp_path, step=7)
    torch.save({"step": 9}, tmp_path / "best.pt")  # step 9 improved; its last.pt was never written
    assert last_good_checkpoint(tmp_path) == (f"{tmp_path / 'best.pt'} (step 9) is the last good checkpoint; "
                                              f"continue with --resume {tmp_path / 'best.pt'}")
    (tmp_path / "last.pt").unlink()  # the disk filled up at the first validation, after best.pt
    assert last_good_checkpoint(tmp_path).startswith(f"{tmp_path / 'best.pt'} (step 9)")


def test_a_damaged_or_missing_last_pt_points_to_the_readable_best_pt(tmp_path):
    """A last.pt cut short (a full disk, a copy) or never written (Ctrl-C during its first write) leaves best.pt to
    continue from: both the refusal of a new run there and the failed resume name it, never the unreadable file."""
    fake_run(tmp_path / "run", step=7)
    last, best = tmp_path / "run" / "last.pt", tmp_path / "run" / "best.pt"
    torch.save({"step": 5}, best)
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(UserError) as refused, claim_run_dir(tmp_path / "run", default=tmp_path / "unused"):
        pass
    assert f"continue it with --resume {best}, or pass --out" in str(refused.value)
    with pytest.raises(UserError) as unreadable:
        read_resumed(last)
    assert str(unreadable.value).startswith(f"{last}: not a readable checkpoint")
    assert str(unreadable.value).endswith(f"; {best} (step 5) beside it is readable: continue with --resume {best}")
    last.unlink()
    with pytest.raises(UserError) as refused, claim_run_dir(tmp_path / "run", default=tmp_path / "unused"):
        pass
    assert f"continue it with --resume {best}, or pass --out" in str(refused.value)


def test_before_its_first_checkpoint_a_resumed_run_names_the_one_it_resumed(tmp_path):
    resumed = tmp_path / "A" / "last.pt"
    fake_run(resumed.parent, step=7)
    assert last_good_checkpoint(tmp_path / "new", resume_path=resumed) == (
        f"no checkpoint of this run was written to {tmp_path / 'new'}; {resumed} is still the last good checkpoint; "
        f"continue with --resume {resumed} --out {tmp_path / 'new'}")
