"""Untrusted or unbounded text in one-line error messages."""

from __future__ import annotations

from collections.abc import Sequence


def shown(text: str, limit: int = 100) -> str:
    """Text from a package, a repository or a file, as it may appear in a message: one line, bounded, with
    control characters and undecodable bytes escaped."""
    cut = text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
    return cut.encode("unicode_escape", "backslashreplace").decode("ascii")


def summarize(items: Sequence[str], limit: int = 10) -> str:
    """'a, b, c' or, for long lists, 'a, b, c, ... and 99,997 more'."""
    head = ", ".join(shown(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{head}, ... and {rest:,} more" if rest > 0 else head
