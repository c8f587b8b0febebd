"""User-facing errors: one clear line for the person at the terminal, never a bare traceback.

``datasets`` and ``backbones`` raise their own one-line errors (:class:`~datasets.DataError`,
:class:`~backbones.WeightsError`); the library adds :class:`UserError` for flags, checkpoints and runs, and
:class:`Interrupted` for a Ctrl-C that knows what it kept. :func:`report_user_errors`, the one place every tool
reports errors, turns any of them into one line and an exit status: 2 for an error, 130 for Ctrl-C, 141 (quietly)
when the reader of the output went away.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from backbones import WeightsError
from datasets.errors import DataError, one_line

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "EXIT_USER_ERROR", "USER_ERRORS", "Interrupted", "RunWideError",
           "UserError", "error_behind", "interrupt_on_signals", "memory_failures_as", "one_line", "os_error_behind",
           "raise_if_interrupted", "report_user_errors"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program whose reader went away (`| head`)


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data); its message is one line naming the cause."""


class RunWideError(UserError):
    """A user error every process of a torchrun run meets alike (the loss, averaged over the ranks, went NaN):
    said once per machine, as errors before the ranks join are."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, re-raised with one line saying what was kept (e.g. which checkpoint is the last good one)."""


#: The stop signal received inside :func:`interrupt_on_signals` (None: none yet).
_received: int | None = None


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within, Ctrl-C raises KeyboardInterrupt and SIGTERM (kill, docker stop, a batch scheduler's time limit)
    :class:`Interrupted` in the main thread, so the tool stops the same way for both: cleaned up, saying what it
    kept. Each is remembered for :func:`raise_if_interrupted`."""
    global _received
    _received = None
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received = None


def raise_if_interrupted() -> None:
    """Raise again a stop signal whose exception was lost: Python drops one raised where it cannot propagate
    (``Exception ignored in ...``), e.g. in an at-fork callback while data-loading workers start."""
    if _received is not None:
        raise _interruption(_received)


def _interrupt(signum: int, frame: object) -> None:
    global _received
    _received = signum
    raise _interruption(signum)


def _interruption(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted("stopped by SIGTERM")


#: Every error type whose message is meant for the user as it is.
USER_ERRORS = (UserError, DataError, WeightsError)

# The two ways PyTorch reports a DataLoader worker that died (the OOM killer's SIGKILL, a segfault, ...).
_DEAD_WORKER = re.compile(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\) (is killed by signal: [^.]+|exited unexpectedly)")
# Errors from a full or read-only disk, which torch's writers wrap in a RuntimeError.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# How PyTorch's CPU allocator, CUDA and ONNX Runtime say that an allocation failed, and how many bytes it asked for.
_OUT_OF_MEMORY = re.compile(r"(can't|failed to) allocate memory|out of memory", re.IGNORECASE)
_ASKED_BYTES = re.compile(r"allocate (\d+) bytes")


def report_user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's ``main`` so a user error prints ``error: <message>`` and returns 2, and Ctrl-C prints
    ``interrupted: ...`` and returns 130; a dead data-loader worker and a full disk are user errors too."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        _escape_unencodable_output()
        try:
            return main(argv)
        except USER_ERRORS as exc:
            line, echo = _user_line(exc), _echo_of_local_rank_zero(exc)
        except KeyboardInterrupt as exc:
            if not _echo_of_local_rank_zero(exc):
                print(f"interrupted: {exc}" if str(exc) else "interrupted (Ctrl-C)", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # the reader of stdout is gone (`| head`): end quietly, as other command-line tools do
            _discard_stdout()
            return EXIT_BROKEN_PIPE
        except (RuntimeError, OSError) as exc:
            line, echo = _system_line(exc), False
            if line is None:
                raise
        if not echo:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR

    return wrapper


def _escape_unencodable_output() -> None:
    """Print what stdout's encoding cannot hold (a file name whose bytes are not UTF-8, legal on Linux) escaped, as
    Python does on stderr, instead of failing with UnicodeEncodeError after the files are written."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit meets no closed pipe to report."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _echo_of_local_rank_zero(exc: BaseException) -> bool:
    """Whether this torchrun process, not its machine's first, would only repeat that one's line: Ctrl-C reaches
    every rank, an error before the ranks joined comes from the same flags and files, and a :class:`RunWideError`
    is the same on every rank. Other errors after that may be this rank's own (its share of the data), so they are
    still said."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        return False
    if isinstance(exc, (KeyboardInterrupt, RunWideError)):
        return True
    import torch.distributed as dist  # deferred: only torchrun processes get here

    return not (dist.is_available() and dist.is_initialized())


def _user_line(exc: Exception) -> str:
    """The error's one line; an error that a DataLoader worker re-raised carries the worker's traceback,
    whose last line holds the original message."""
    lines = str(exc).strip().splitlines()
    if len(lines) <= 1:
        return str(exc)
    return lines[-1].split(f"{type(exc).__name__}: ", 1)[-1]


def _system_line(exc: BaseException) -> str | None:
    """One line for failures of the machine rather than the code (a killed worker, a full disk), else None."""
    dead = _DEAD_WORKER.search(str(exc))
    if dead:
        return (f"data loading: worker process {dead.group(1).strip()} {dead.group(2)}; it most likely ran out of "
                "memory: use fewer --workers or a smaller --batch-size")
    failed = os_error_behind(exc)
    if failed is not None and failed.errno in _DISK_ERRNOS:
        return f"{failed.filename + ': ' if failed.filename else ''}cannot write ({failed.strerror})"
    return None


@contextmanager
def memory_failures_as(message: str) -> Iterator[None]:
    """A failed allocation of PyTorch, CUDA or ONNX Runtime inside the block (a size too large for this machine) as
    a UserError: ``message``, its ``{failed}`` replaced by how much was asked for when the error says."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, MemoryError) and not _OUT_OF_MEMORY.search(str(exc)):
            raise
        asked = _ASKED_BYTES.search(str(exc))
        failed = f" (an allocation of {int(asked.group(1)) / 2**30:.1f} GiB failed)" if asked else ""
        raise UserError(message.format(failed=failed)) from None


def error_behind(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first error of ``kind`` behind ``exc``: itself, or one it was raised from or while handling."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__ or cause.__context__
    return cause


def os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError behind an error (torch's writers raise a RuntimeError while handling the OSError of a failed
    write); None for Ctrl-C and the like."""
    return error_behind(exc, OSError) if isinstance(exc, Exception) else None
