"""The data package's error type: a problem with the user's files, told in one line that names the file."""
from __future__ import annotations

__all__ = ["DataError", "one_line", "shorten"]


class DataError(Exception):
    """A missing, unreadable or malformed data file or folder; the message is one line naming it."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line (so an error built from it stays one line)."""
    return shorten(" ".join(str(exc).split()), limit) or type(exc).__name__


def shorten(text: str, limit: int = 300) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ``...`` marking the cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    if space > limit // 2:  # a word boundary not too far back; else cut inside one long token
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "..."
