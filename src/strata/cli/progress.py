"""How the CLI shows a transaction's progress: bars with rates on a terminal (tqdm), one line per phase in
logs and pipes (core.transaction.LineProgress), nothing with --quiet."""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING, Any

from strata.core.transaction import LineProgress, Progress, SilentProgress
from strata.progress import split_count
from strata.units import human_size

if TYPE_CHECKING:
    from tqdm import tqdm

DEFAULT_SIZE = os.terminal_size((80, 24))
COUNTED_FORMAT = "{desc}: {percentage:3.0f}%|{bar:16}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
COUNTED_BYTES_FORMAT = "{desc}: {percentage:3.0f}%|{bar:16}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
TRANSFER_FORMAT = "{desc}: {n_fmt}B [{elapsed}, {rate_fmt}{postfix}]"


def tqdm_size(count: float) -> str:
    from tqdm import tqdm
    return str(tqdm.format_sizeof(count))


_quiet_everywhere = False


def set_quiet_everywhere(quiet: bool) -> None:
    """Global -q/--quiet: every renderer made from now on is silent (results and errors still print)."""
    global _quiet_everywhere
    _quiet_everywhere = quiet


def make_progress(quiet: bool = False, stream: IO[str] | None = None) -> Progress:
    """The renderer for stream (stdout by default): bars when it is a terminal, plain lines otherwise."""
    out = stream if stream is not None else sys.stdout
    if quiet or _quiet_everywhere:
        return SilentProgress()
    if _is_terminal(out):
        return TerminalProgress(out)
    return LineProgress(lambda line: _print_line(out, line))


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except ValueError:  # a closed stream
        return False


def _print_line(stream: IO[str], line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


class TerminalProgress:
    """rpm-ostree's console progress: "Task..." completed in place by "Task... done", a bar with the count
    and its rate for counted work, the bytes and their rate for transfers; each phase leaves one line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._title: str | None = None
        self._bar: tqdm[Any] | None = None
        self._position = 0
        self._transfer = False
        self._bytes = 0
        self._objects = 0

    # ------------------------------------------------------------ Progress

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.clear()
            _print_line(self.stream, text)
            self._bar.refresh()
        elif self._title is not None:
            _print_line(self.stream, f"\r\x1b[K{text}")
            self._write(f"{self._title}...")
        else:
            _print_line(self.stream, text)

    def task_begin(self, text: str) -> None:
        self._close()
        self._title = text
        self._write(f"{text}...")

    def task_end(self, text: str) -> None:
        self._finish(text)

    def percent(self, text: str, percentage: int) -> None:
        title, done, total = split_count(text)
        if self._bar is None or title != self._title or self._transfer:
            self._open_bar(title, total or 100, " items" if total else "%")
        assert self._bar is not None
        if total and self._bar.total != total:  # the count arrived after a first plain percentage
            self._bar.reset(total)
            self._bar.unit, self._position = " items", 0
        position = done if done is not None and total else percentage
        if position > self._position:
            self._bar.update(position - self._position)
            self._position = position

    def download(self, fetched_objects: int, fetched_bytes: int) -> None:
        if self._bar is None:
            self._open_transfer()
        assert self._bar is not None
        self._objects = fetched_objects
        if self._transfer:
            self._bar.update(fetched_bytes - self._bytes)
            self._bar.set_postfix_str(f"{fetched_objects} objects", refresh=True)
        else:
            elapsed = max(self._bar.format_dict["elapsed"], 1e-3)
            self._bar.bar_format = COUNTED_BYTES_FORMAT  # for downloads the byte rate says more than items/s
            self._bar.set_postfix_str(f"{tqdm_size(fetched_bytes)}B, {tqdm_size(fetched_bytes / elapsed)}B/s",
                                      refresh=True)
        self._bytes = fetched_bytes

    def progress_end(self) -> None:
        self._finish("done")

    def finished(self, success: bool, error_message: str) -> None:
        self._close()

    # ------------------------------------------------------------ drawing

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _open_bar(self, title: str, total: int, unit: str) -> None:
        from tqdm import tqdm
        self._close()
        self._title = title
        self._bar = tqdm(total=total, desc=title, unit=unit, file=self.stream, leave=False, mininterval=0.1,
                         bar_format=COUNTED_FORMAT, **self._width())

    def _open_transfer(self) -> None:
        from tqdm import tqdm
        self._close()
        self._title, self._transfer = "Receiving objects", True
        self._bar = tqdm(desc=self._title, unit="B", unit_scale=True, file=self.stream, leave=False,
                         mininterval=0.1, bar_format=TRANSFER_FORMAT, **self._width())

    def _width(self) -> dict[str, Any]:
        """Follow the terminal's size; a terminal that reports none (a pty nobody sized) gets 80x24, as tqdm
        draws nothing in zero columns or rows."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (OSError, ValueError):
            size = os.terminal_size((0, 0))
        if size.columns > 0 and size.lines > 0:
            return {"dynamic_ncols": True}
        return {"ncols": DEFAULT_SIZE.columns, "nrows": DEFAULT_SIZE.lines}

    def _finish(self, suffix: str) -> None:
        if self._title is None:
            return
        if self._transfer:
            details = f" ({self._objects} objects, {human_size(self._bytes)})"
        else:
            details = f" ({human_size(self._bytes)})" if self._bytes else ""
        line = f"{self._title}... {suffix}{details}"
        self._close()
        _print_line(self.stream, f"\r\x1b[K{line}")

    def _close(self) -> None:
        """Drop the phase on screen without a closing line (a failure, or a new phase replacing it)."""
        if self._bar is not None:
            self._bar.close()
        elif self._title is not None:
            self._write("\r\x1b[K")
        self._bar, self._title, self._transfer = None, None, False
        self._bytes = self._objects = self._position = 0
