"""Automatic version numbering of composed commits (`automatic-version-prefix`)."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime

_TAG_RE = re.compile(r"<([a-z]+):([^>]*)>")


def expand_date_tags(prefix: str, now: datetime) -> tuple[str, bool]:
    """Replace <date:FORMAT> tags; returns the expanded prefix and whether a date tag was present."""
    had_date = False

    def repl(match: re.Match[str]) -> str:
        nonlocal had_date
        tag, fmt = match.groups()
        if tag != "date":
            print(f"ignoring unknown tag {tag}", file=sys.stderr)
            return match.group(0)
        had_date = True
        return now.strftime(fmt)

    return _TAG_RE.sub(repl, prefix), had_date


def next_version(prefix: str, last: str | None, *, suffix: str = ".", now: datetime | None = None) -> str:
    expanded, dated = expand_date_tags(prefix, now or datetime.now(UTC))
    counter = _counter_after(expanded, suffix, last)
    if dated:
        return f"{expanded}{suffix}{0 if counter is None else counter + 1}"
    if last is None or not last.startswith(expanded):
        return expanded
    if last == expanded:
        return f"{expanded}{suffix}1"
    return f"{expanded}{suffix}{counter + 1}" if counter is not None else expanded


def _counter_after(prefix: str, suffix: str, last: str | None) -> int | None:
    if last is None or not last.startswith(prefix + suffix):
        return None
    rest = last[len(prefix) + len(suffix):]
    return int(rest) if rest.isdigit() else None
