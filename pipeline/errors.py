"""The one helper for the project's one-line error rule, and the error training stops with."""
from __future__ import annotations


def one_line(exc: BaseException | str, limit: int = 300, *, empty: str | None = None) -> str:
    """The first line of an exception's message, control characters dropped, whitespace collapsed,
    at most ``limit`` characters (a damaged file's bytes end up in some library messages). When there
    is no text: ``empty``, or else the exception's type name."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    s = " ".join("".join(ch if ch.isprintable() else " " for ch in first).split())[:limit]
    if s:
        return s
    if empty is not None:
        return empty
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


class TrainingError(Exception):
    """Training stopped (NaN loss, bad configuration). One-line message."""
