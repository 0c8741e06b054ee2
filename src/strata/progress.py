"""Progress of long steps (downloads, imports, checkouts, scripts, pulls) as image/ and packages/ report it.

The receiver is the running operation's `Reporter`: a transaction's Progress (core.transaction), which the
CLI renders and the daemon forwards as rpm-ostree's Transaction signals. The operation's frame installs it
with `reporting_to`; the loops deep below report to it through `task`, `items` and `transfer` without every
function in between growing a parameter (the layers between are owned by many call sites). With no receiver
installed the helpers do nothing.

The signals follow rpm-ostree's daemon: a task is TaskBegin/TaskEnd("done"); counted work ("n items") is
PercentProgress("TEXT (c/n)", percent) and ProgressEnd; bytes received are DownloadProgress."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

UPDATE_INTERVAL = 0.1  # seconds between two reports of the same counter (the last one always goes out)
_COUNT_SUFFIX = re.compile(r"^(?P<title>.*) \((?P<done>\d+)/(?P<total>\d+)\)$")


class Reporter(Protocol):
    """The progress half of core.transaction.Progress (same names, same meaning)."""

    def message(self, text: str) -> None: ...

    def task_begin(self, text: str) -> None: ...

    def task_end(self, text: str) -> None: ...

    def percent(self, text: str, percentage: int) -> None: ...

    def download(self, fetched_objects: int, fetched_bytes: int) -> None: ...

    def progress_end(self) -> None: ...


_current: ContextVar[Reporter | None] = ContextVar("strata_progress_reporter", default=None)


@contextmanager
def reporting_to(reporter: Reporter) -> Iterator[Reporter]:
    """Send the progress of everything run inside the block to reporter."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def current() -> Reporter | None:
    return _current.get()


def split_count(text: str) -> tuple[str, int | None, int | None]:
    """"Importing packages (3/25)" -> ("Importing packages", 3, 25); text without a count -> (text, None, None)."""
    found = _COUNT_SUFFIX.match(text)
    if found is None:
        return text, None, None
    return found["title"], int(found["done"]), int(found["total"])


@contextmanager
def task(text: str) -> Iterator[None]:
    """One step without a count: "TEXT..." then "TEXT... done". A failure leaves the end to `finished`."""
    reporter = _current.get()
    if reporter is not None:
        reporter.task_begin(text)
    yield
    if reporter is not None:
        reporter.task_end("done")


class Items:
    """Counted work; `advance` may be called from several threads."""

    def __init__(self, reporter: Reporter | None, text: str, total: int) -> None:
        self.reporter = reporter
        self.text = text
        self.total = max(total, 0)
        self.done = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._last_report = 0.0

    def begin(self) -> None:
        if self.reporter is None:
            return
        if self.total == 0:  # nothing to count: a plain task, as rpm-ostree's daemon sends it
            self.reporter.task_begin(self.text)
        else:
            self.reporter.percent(f"{self.text} (0/{self.total})", 0)

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        if self.reporter is None:
            return
        with self._lock:
            self.done += count
            self.bytes += nbytes
            now = time.monotonic()
            if self.done < self.total and now - self._last_report < UPDATE_INTERVAL:
                return
            self._last_report = now
            if self.bytes:
                self.reporter.download(self.done, self.bytes)
            percentage = 100 if self.done >= self.total else self.done * 100 // self.total
            self.reporter.percent(f"{self.text} ({self.done}/{self.total})", percentage)

    def end(self) -> None:
        if self.reporter is None:
            return
        if self.total == 0:
            self.reporter.task_end("done")
        else:
            self.reporter.progress_end()


@contextmanager
def items(text: str, total: int) -> Iterator[Items]:
    """`with items("Importing packages", n) as bar: ... bar.advance(nbytes=size)`."""
    counter = Items(_current.get(), text, total)
    counter.begin()
    yield counter
    counter.end()


class Transfer:
    """Objects and bytes received by a pull, reported at most every UPDATE_INTERVAL; thread-safe."""

    def __init__(self, reporter: Reporter | None) -> None:
        self.reporter = reporter
        self._lock = threading.Lock()
        self._last_report = 0.0
        self._reported = False

    def update(self, fetched_objects: int, fetched_bytes: int, *, final: bool = False) -> None:
        if self.reporter is None or (final and not self._reported and fetched_objects == 0):
            return  # nothing but metadata came: no phase to show
        with self._lock:
            now = time.monotonic()
            if not final and now - self._last_report < UPDATE_INTERVAL:
                return
            self._last_report = now
            self._reported = True
            self.reporter.download(fetched_objects, fetched_bytes)

    def end(self) -> None:
        if self.reporter is not None and self._reported:
            self.reporter.progress_end()


def transfer() -> Transfer:
    """A transfer counter bound to the current reporter (capture it on the thread that installed it)."""
    return Transfer(_current.get())
