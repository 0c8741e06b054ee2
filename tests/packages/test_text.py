"""Untrusted and unbounded text in error messages."""

from __future__ import annotations

from strata.packages.text import shown, summarize


def test_long_lists_are_summarized() -> None:
    names = [f"missing-{i}" for i in range(100_000)]
    text = summarize(names)
    assert text.startswith("missing-0, missing-1, ") and text.endswith(", missing-9, ... and 99,990 more")
    assert summarize(["a", "b", "c"]) == "a, b, c"


def test_shown_text_is_one_bounded_line() -> None:
    assert shown("x\nR! /usr\x00\udcff") == "x\\nR! /usr\\x00\\udcff"
    long = shown("n" * 5000)
    assert len(long) < 130 and long.endswith("... (5,000 characters)")
