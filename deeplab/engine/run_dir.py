"""A training run's output folder: one run per folder, one process per run, nothing of another run replaced.

- A new run never starts in a folder that holds anything it would write (:data:`RUN_FILES`: another run's, or a
  user's file of the same name). Without an explicit folder it takes the first free one of ``runs/<name>``,
  ``runs/<name>-2``, ``runs/<name>-3``...
- A run that stops (an error, Ctrl-C) before its first checkpoint removes what it created, the folder too, so
  the same command can run again; what was there before stays.
- A resumed run writes beside the checkpoint it continues, unless told where; never into another run's
  folder, and never over a later state of its own run (resuming an older ``best.pt`` beside a newer ``last.pt``).
  A checkpoint renamed (``models/deeplab.pt``) continues beside its run files only by name: the ``last.pt`` there may
  be another run's, so it is refused.
- While a run writes, a lock file in its folder holds the owner's pid and host; a second process is refused.
  The lock dies with its owner: it is an ``flock`` (released by the kernel when the process ends), and where
  the filesystem has no ``flock``, a lock whose process is gone is cleared.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..errors import UserError
from ..tool_args import check_writable

try:
    import fcntl
except ImportError:  # not POSIX: the pid in the lock file decides
    fcntl = None

__all__ = ["LOCK_NAME", "RUN_FILES", "FolderInUse", "RunLock", "claim_run_dir", "last_good_checkpoint",
           "latest_checkpoint", "read_resumed", "run_files"]

#: Everything a run writes in its folder (besides its lock and temporary files): a folder holding any is taken.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "tensorboard")
#: The files that say a folder holds a run (rather than, say, a picture of the same name).
_RUN_RECORDS = ("last.pt", "best.pt", "metrics.jsonl")
#: The checkpoints: a run that wrote one keeps its files when it stops.
_CHECKPOINTS = ("last.pt", "best.pt")
LOCK_NAME = ".train.lock"
_WRITING_S = 10.0  # a lock file younger than this may still be getting its owner's record


def run_files(folder: str | Path) -> list[str]:
    """Which of :data:`RUN_FILES` ``folder`` holds."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]


def _file_states(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Each of :data:`RUN_FILES` as (inode, mtime), None when absent: an atomic rewrite changes both."""
    states: dict[str, tuple[int, int] | None] = {}
    for name in RUN_FILES:
        try:
            info = (folder / name).stat()
        except FileNotFoundError:
            states[name] = None
        else:
            states[name] = (info.st_ino, info.st_mtime_ns)
    return states


def _remove_created_unless_saved(folder: Path, before: dict[str, tuple[int, int] | None]) -> None:
    """Remove the run files absent in ``before`` when no checkpoint was written since: a stopped run that saved
    nothing worth continuing leaves the folder as it found it, so the same command can run again."""
    after = _file_states(folder)
    if any(after[name] != before[name] for name in _CHECKPOINTS):
        return
    for name in RUN_FILES:
        if before[name] is None and after[name] is not None:
            path = folder / name
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()


@contextlib.contextmanager
def claim_run_dir(
    out: str | Path | None, *, default: str | Path, resume_path: str | Path | None = None, resume_step: int = 0
) -> Iterator[Path]:
    """Choose the run's folder, lock it for the block, and give it; UserError when it belongs to another run.

    ``out`` is the folder asked for (None: beside ``resume_path`` when resuming, else the first free numbered
    folder from ``default``); ``resume_step`` is the step of the checkpoint resumed. When the block fails before
    writing a checkpoint, the run files it created are removed (and the folder, when the claim created it).
    """
    if out is None and resume_path is None:
        folder, lock = _first_free(Path(default))
    else:
        folder = Path(out) if out is not None else Path(resume_path).parent
        lock = RunLock(folder).acquire()
        try:
            _check_run_dir(folder, resume_path=resume_path, resume_step=resume_step)
        except BaseException:
            lock.release()
            raise
    before = _file_states(folder)
    try:
        yield folder
    except BaseException:
        _remove_created_unless_saved(folder, before)
        raise
    finally:
        lock.release()


def _first_free(default: Path) -> tuple[Path, RunLock]:
    """The first of ``default``, ``default-2``, ... that holds no run and no other process, locked."""
    for number in itertools.count(1):
        folder = default if number == 1 else default.with_name(f"{default.name}-{number}")
        if run_files(folder):
            continue
        try:
            lock = RunLock(folder).acquire()
        except FolderInUse:
            continue
        if not run_files(folder):  # still free now that we hold it
            return folder, lock
        lock.release()
    raise AssertionError("unreachable")


def _check_run_dir(folder: Path, *, resume_path: str | Path | None, resume_step: int) -> None:
    """Refuse a folder holding another run, or a later state of the run being resumed."""
    present = run_files(folder)
    if not present:
        return
    names = ", ".join(name + "/" if (folder / name).is_dir() else name for name in present)
    another = bool(set(present) & set(_RUN_RECORDS))
    held = f"{folder}: holds another run ({names})" if another else f"{folder}: holds {names}, which a run writes"
    last = folder / "last.pt"
    if resume_path is None:
        if another and not any((folder / name).exists() for name in _CHECKPOINTS):
            # A run killed (SIGKILL, power loss) before its first checkpoint had no chance to remove its files.
            held = (f"{folder}: holds a run that has no checkpoint ({names}: stopped before its first one, or its "
                    "checkpoints were removed), so there is nothing to resume")
        found = latest_checkpoint(folder)
        how = f"continue it with --resume {found[1]}" if found else f"move {'its files' if another else 'it'} away"
        raise UserError(f"{held}; {how}, or pass --out with a new folder")
    resume_path = Path(resume_path)
    if not _same_file(resume_path.parent, folder):
        raise UserError(f"{held}; pass --out with a new folder to continue {resume_path} there")
    if _same_file(resume_path, last):
        return
    if resume_path.name not in _CHECKPOINTS:  # a copy renamed into some folder: the run files there may be another's
        raise UserError(f"{held}, and {resume_path.name} is not one of its checkpoints "
                        f"({', '.join(_CHECKPOINTS)}), so resuming here could replace another run's files; pass --out "
                        f"with a new folder to continue {resume_path} there")
    saved = _saved_step(last)
    if saved is not None and saved > resume_step:
        raise UserError(f"{last}: is at step {saved}, past {resume_path} (step {resume_step}), and resuming here "
                        f"would replace it; resume {last} instead, or pass --out with a new folder")


def last_good_checkpoint(folder: str | Path, *, resume_path: str | Path | None = None) -> str:
    """Which checkpoint a stopped run leaves in ``folder`` to continue from, in words (what Ctrl-C reports): the later
    of ``last.pt`` and ``best.pt`` (ahead when the run stopped between the two writes); before its first one, a
    resumed run's is still ``resume_path``."""
    found = latest_checkpoint(Path(folder))
    if found:
        step, path = found
        return f"{path} (step {step}) is the last good checkpoint; continue with --resume {path}"
    if resume_path is None:
        return f"no checkpoint was written to {folder}"
    out = "" if _same_file(Path(resume_path).parent, Path(folder)) else f" --out {folder}"
    return (f"no checkpoint of this run was written to {folder}; {resume_path} is still the last good checkpoint; "
            f"continue with --resume {resume_path}{out}")


def read_resumed(path: str | Path) -> dict[str, Any]:
    """The checkpoint to resume; when that file cannot be read, the error names the readable checkpoint beside it
    (a last.pt cut short by a full disk or a copy still leaves best.pt to continue from)."""
    try:
        return load_checkpoint(path)
    except UserError as exc:
        found = latest_checkpoint(Path(path).parent) if Path(path).is_file() else None
        if found is None or _same_file(found[1], Path(path)):
            raise
        step, other = found
        raise UserError(f"{exc}; {other} (step {step}) beside it is readable: continue with --resume {other}") from None


def latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """``(step, path)`` of the later readable one of ``folder``'s last.pt and best.pt (ahead when a run stopped
    between the two writes; last.pt among equals), None when neither can be read."""
    saved = [(step, path) for path in (folder / name for name in _CHECKPOINTS)
             if (step := _saved_step(path)) is not None]
    return max(saved, key=lambda found: found[0]) if saved else None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _saved_step(checkpoint: Path) -> int | None:
    """The step a checkpoint was saved at (memory-mapped: its tensors are not read), or None if unreadable."""
    if not checkpoint.is_file():
        return None
    try:
        step = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("step")
    except Exception:  # a damaged last.pt holds no state worth protecting
        return None
    return step if isinstance(step, int) else None


class FolderInUse(UserError):
    """Another live process holds the folder's lock."""


class RunLock:
    """The lock file of a run folder: the owner's pid, host and start time, locked for as long as it runs.

    The folders it creates for the lock are removed again on release when nothing else was written there.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`FolderInUse`; a lock left by a process that is gone is taken over."""
        self._created = list(itertools.takewhile(lambda p: not p.exists(), [self.folder, *self.folder.parents]))
        check_writable(self.folder)
        while self._fd is None:
            if fcntl is not None:
                self._fd = self._flock()
            else:
                self._fd = self._create_exclusive()
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps(_owner_record()).encode())
        return self

    def release(self) -> None:
        """Remove the lock file and let go of it, then the folders :meth:`acquire` created if empty (safe to call
        twice)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        for folder in self._created:  # innermost first; a folder holding anything stays, and so do those above it
            try:
                folder.rmdir()
            except OSError:
                break

    def _flock(self) -> int | None:
        """An flock on the lock file; None when the file was replaced meanwhile (then try again)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_record(self.path)
            os.close(fd)
            raise self._in_use(owner) from None
        except OSError:  # a filesystem without flock (some network mounts): the pid decides
            os.close(fd)
            return self._create_exclusive()
        try:  # the owner may have removed the file between our open and our flock
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            return None
        return fd

    def _create_exclusive(self) -> int | None:
        """Create the lock file, clearing one whose owner process is gone; None to try again."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_record(self.path)
            if _alive(owner, self.path):
                raise self._in_use(owner) from None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # its owner is dead: a stale lock
            return None

    def _in_use(self, owner: dict[str, Any]) -> FolderInUse:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner["started"])) if "started" in owner else "?"
        return FolderInUse(
            f"{self.folder}: in use by another training (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
            f"since {since}); wait for it to end or pass --out with another folder (if that process is gone, "
            f"delete {self.path})")


def _owner_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _read_record(path: Path) -> dict[str, Any]:
    """The owner record of a lock file ({} when unreadable: being written, or not ours)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _alive(owner: dict[str, Any], path: Path) -> bool:
    """Whether a lock's owner may still run: a live pid on this host, or a process on another host (which we
    cannot ask); a lock file without a record is alive while fresh (its owner is writing it)."""
    if not owner:
        try:
            return time.time() - path.stat().st_mtime < _WRITING_S
        except FileNotFoundError:
            return False
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
