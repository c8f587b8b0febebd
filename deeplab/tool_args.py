"""Checks a tool makes on its flags before any work: numbers in range, output folders writable, output files new,
a server's address and port free to bind.

Each refusal is a :class:`~deeplab.errors.UserError` naming the flag or the file, so a run never ends in a
traceback after its work is done, and never replaces a file it did not write unless the user asks.
"""
from __future__ import annotations

import errno
import io
import math
import os
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, TextIO

from .errors import UserError

__all__ = ["check_bindable", "check_file_name", "check_new_files", "check_not_empty", "check_ranges", "check_seed",
           "check_writable", "is_stream", "report_stream"]

#: Folders whose entries name this process's open streams (``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``).
_STREAM_FOLDERS = ("/dev", "/dev/fd", "/proc/self/fd")
#: The largest seed ``torch.Generator.manual_seed`` takes.
_MAX_SEED = 2**64 - 1
#: What ends a folder's name, never a file's.
_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is a device or a pipe, or a standard stream such as ``/dev/stdout`` even where the shell
    redirected it to a file: written through as it is, never replaced by a new file nor given files beside it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        return False
    return not stat.S_ISREG(mode) or os.path.dirname(os.path.abspath(path)) in _STREAM_FOLDERS


def report_stream(out: str | Path) -> TextIO:
    """Where a tool prints its report: standard error when its output file ``out`` is this process's standard output
    (``--out /dev/stdout > model.onnx``), where the report would land inside that file and break it; else standard
    output."""
    try:
        same = os.path.samestat(os.stat(out), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):  # no such file, or a stdout without a descriptor
        same = False
    return sys.stderr if same else sys.stdout


def check_ranges(values: Mapping[str, float | None], *, at_least_one: Iterable[str] = (),
                 at_least_zero: Iterable[str] = (), above_zero: Iterable[str] = ()) -> None:
    """Refuse NaN, infinity or a number outside its rule; ``values`` maps a flag (``"--repeats"``) to its value,
    and None (a flag left to its default) passes."""
    for flags, rule, ok in ((at_least_one, "at least 1", lambda v: v >= 1),
                            (at_least_zero, "0 or more", lambda v: v >= 0),
                            (above_zero, "above 0", lambda v: v > 0)):
        for flag in flags:
            value = values[flag]
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise UserError(f"{flag}: must be {rule}, got {value}")


def check_not_empty(values: Mapping[str, str | None]) -> None:
    """Refuse a flag given an empty text (``--out "$DIR"`` with DIR unset); ``values`` maps a flag to its text, None
    when left out. Empty, a path names the working folder, and a checkpoint reads as no flag at all."""
    for flag, value in values.items():
        if value is not None and not value.strip():
            raise UserError(f"{flag}: is empty (an unset shell variable?); give it a value or leave it out")


def check_seed(seed: int, *, flag: str = "--seed") -> None:
    """Refuse a seed torch's generators cannot take (they hold 64 bits), before the work that would use it."""
    if not 0 <= seed <= _MAX_SEED:
        raise UserError(f"{flag}: must lie between 0 and {_MAX_SEED}, got {seed}")


def check_writable(out_dir: str | Path, *, create: bool = True) -> Path:
    """Create ``out_dir`` and prove a file can be written there, so a bad --out fails before any work; without
    ``create``, prove only that it is a folder or could be made one, creating nothing (a check before loading)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # mkdir's own word for it would be "File exists"
        raise UserError(f"{out_dir}: cannot write to the output folder (it is a file)")
    if not create:
        _check_creatable(out_dir)
        return out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write to the output folder ({exc.strerror or exc})") from None
    return out_dir


def check_file_name(name: str, *, flag: str) -> None:
    """Refuse an output file name ending in a slash (``--out exports/``): it names a folder, and Path would drop the
    slash and write a file of that name."""
    if name.endswith(_SEPARATORS):
        raise UserError(f"{name}: names a folder (it ends in {name[-1]!r}); {flag} names the file to write")


def check_new_files(paths: Iterable[str | Path], *, flag: str, overwrite: bool = False,
                    inputs: Iterable[tuple[str, str | Path]] = ()) -> None:
    """Refuse, before any work, output ``paths`` (named by ``flag``, e.g. ``--json``) that are folders, that are one
    of the run's ``inputs`` (``(flag, path)`` pairs; never replaced, even with ``overwrite``), that exist when
    ``overwrite`` is off (naming the first and how many), or whose folder cannot be written or created (nothing is
    created here). A name ending in a slash (``--out exports/``) names a folder, not the file Path would make of it."""
    paths = list(paths)
    for path in paths:
        if isinstance(path, str):
            check_file_name(path, flag=flag)
    paths = [Path(path) for path in paths]
    inputs = [(input_flag, Path(source)) for input_flag, source in inputs if Path(source).exists()]
    for path in paths:
        if path.is_dir():
            raise UserError(f"{path}: is a folder; {flag} names the file to write")
        for input_flag, source in inputs:
            if path.exists() and path.samefile(source):
                raise UserError(f"{path}: is the {input_flag} file; {flag} names a new file to write")
        if is_stream(path):
            continue  # a device or a pipe (/dev/stdout, /dev/null): written through, nothing in it is lost
        if path.exists() and not overwrite:
            others = sum(other.is_file() for other in paths) - 1
            more = f" (and {others} more)" if others else ""
            raise UserError(f"{path}: exists and this run did not write it{more}; choose another {flag} or pass "
                            "--overwrite to replace it")
        _check_creatable(path.parent)


def _check_creatable(folder: Path) -> None:
    """Prove a file can be written in ``folder``, or in the nearest folder above it that exists (where the writer
    will create it), without creating anything: a refused run leaves no trace."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{folder}: cannot write to the output folder ({exc.strerror or exc})") from None


def check_bindable(host: str, port: int | None) -> None:
    """Refuse a ``--host`` that is no address of this machine and a ``--port`` out of range or in use, by binding
    a socket there (closed again at once; port None tests the host alone)."""
    if port is not None and not 1 <= port <= 65535:
        raise UserError(f"--port {port}: must lie between 1 and 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--host {host}: not an address or a known host name ({exc})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does: TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            flag = f"--port {port}" if port and exc.errno == errno.EADDRINUSE else f"--host {host}"
            raise UserError(f"{flag}: cannot serve there ({exc.strerror or exc})") from None
