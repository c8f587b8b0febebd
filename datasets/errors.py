"""The data package's error type: a problem with the user's files, told in one line that names the file."""
from __future__ import annotations

__all__ = ["DataError", "one_line"]


class DataError(Exception):
    """A missing, unreadable or malformed data file or folder; the message is one line naming it."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line (so an error built from it stays one line)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
