"""User-facing errors: one clear line for the person at the terminal, never a bare traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

__all__ = ["UserError", "one_line", "report_user_errors"]


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data); its message is one line naming the cause."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line (so a UserError built from it stays one line)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def report_user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's ``main`` so a :class:`UserError` prints ``error: <message>`` and returns exit status 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as exc:
            print(f"error: {_user_line(exc)}", file=sys.stderr)
            return 2

    return wrapper


def _user_line(exc: UserError) -> str:
    """The error's one line; a UserError that a DataLoader worker re-raised carries the worker's traceback,
    whose last line holds the original message."""
    lines = str(exc).strip().splitlines()
    return lines[-1].split("UserError: ", 1)[-1] if len(lines) > 1 else str(exc)
