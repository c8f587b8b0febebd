"""User-facing errors: one clear line for the person at the terminal, never a bare traceback.

``datasets`` and ``backbones`` raise their own one-line errors (:class:`~datasets.DataError`,
:class:`~backbones.WeightsError`); the library adds :class:`UserError` for flags, checkpoints and runs.
:func:`report_user_errors`, the one place every tool reports errors, turns any of them into ``error: ...``.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

from backbones import WeightsError
from datasets.errors import DataError, one_line

__all__ = ["USER_ERRORS", "UserError", "one_line", "report_user_errors"]


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data); its message is one line naming the cause."""


#: Every error type whose message is meant for the user as it is.
USER_ERRORS = (UserError, DataError, WeightsError)


def report_user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's ``main`` so a user error prints ``error: <message>`` and returns exit status 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except USER_ERRORS as exc:
            print(f"error: {_user_line(exc)}", file=sys.stderr)
            return 2

    return wrapper


def _user_line(exc: Exception) -> str:
    """The error's one line; an error that a DataLoader worker re-raised carries the worker's traceback,
    whose last line holds the original message."""
    lines = str(exc).strip().splitlines()
    if len(lines) <= 1:
        return str(exc)
    return lines[-1].split(f"{type(exc).__name__}: ", 1)[-1]
