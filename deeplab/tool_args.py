"""Checks a tool makes on its flags before any work: numbers in range, output folders writable, output files new.

Each refusal is a :class:`~deeplab.errors.UserError` naming the flag or the file, so a run never ends in a
traceback after its work is done, and never replaces a file it did not write unless the user asks.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from .errors import UserError

__all__ = ["check_new_files", "check_ranges", "check_writable"]


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


def check_writable(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove a file can be written there, so a bad --out fails before any work."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write to the output folder ({exc.strerror or exc})") from None
    return out_dir


def check_new_files(paths: Iterable[str | Path], *, flag: str, overwrite: bool = False) -> None:
    """Refuse, before any work, output ``paths`` (named by ``flag``, e.g. ``--json``) that are folders, that exist
    when ``overwrite`` is off, or whose folder cannot be written (it is created when missing)."""
    for path in map(Path, paths):
        if path.is_dir():
            raise UserError(f"{path}: is a folder; {flag} names the file to write")
        if path.exists() and not overwrite:
            raise UserError(f"{path}: exists and this run did not write it; choose another {flag} or pass "
                            "--overwrite to replace it")
        check_writable(path.parent)
