"""The frame every change to a sysroot runs in: the sysroot lock, a busy record that `status` and `cancel`
read, cancellation at safe points, progress reported through one callback interface, and the invariants
checked before the change counts as a success.

The progress interface follows rpm-ostree's Transaction D-Bus signals (Message, TaskBegin, TaskEnd,
PercentProgress, DownloadProgress, ProgressEnd, Finished), so a daemon can forward it one to one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol

from strata.core.invariants import InvariantError, PendingSnapshot, check_invariants, snapshot_pending
from strata.errors import LockedError, StrataError
from strata.image.fsutil import atomic_write
from strata.progress import Reporter, reporting_to, split_count
from strata.sysroot.crashpoints import crash_point
from strata.sysroot.sysroot import Sysroot
from strata.units import human_size

RECORD_PATH = "run/strata/transaction.json"
CANCEL_SIGNAL = signal.SIGTERM


class CancelledError(StrataError):
    """The transaction was cancelled before it changed anything."""


class Progress(Reporter, Protocol):
    """What a running transaction reports (the lower layers' Reporter calls plus the end of the transaction);
    every method may be called from the transaction's thread only."""

    def finished(self, success: bool, error_message: str) -> None: ...


class LineProgress:
    """Progress as plain lines for logs and pipes: one line per phase, "Task... done" when a task or a counted
    phase ends (bytes received added), messages as they come. A message that arrives inside a phase first
    shows where it belongs with a "Task..." line."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self._phase: str | None = None
        self._announced = False
        self._transfer = False  # the phase is a pull: objects and bytes, no count
        self._objects = 0
        self._bytes = 0

    def message(self, text: str) -> None:
        self._announce()
        self.write(text)

    def task_begin(self, text: str) -> None:
        self._start(text)

    def task_end(self, text: str) -> None:
        self._finish(text)

    def percent(self, text: str, percentage: int) -> None:
        title, _done, _total = split_count(text)
        if title != self._phase:
            self._start(title)

    def download(self, fetched_objects: int, fetched_bytes: int) -> None:
        if self._phase is None:
            self._start("Receiving objects")
            self._transfer = True
        self._objects, self._bytes = fetched_objects, fetched_bytes

    def progress_end(self) -> None:
        self._finish("done")

    def finished(self, success: bool, error_message: str) -> None:
        self._phase = None

    def _start(self, title: str) -> None:
        self._announce()
        self._phase, self._announced, self._transfer = title, False, False
        self._objects = self._bytes = 0

    def _announce(self) -> None:
        if self._phase is not None and not self._announced:
            self.write(f"{self._phase}...")
            self._announced = True

    def _finish(self, suffix: str) -> None:
        if self._phase is None:
            return
        if self._transfer:
            details = f" ({self._objects} objects, {human_size(self._bytes)})"
        else:
            details = f" ({human_size(self._bytes)})" if self._bytes else ""
        self.write(f"{self._phase}... {suffix}{details}")
        self._phase = None


class SilentProgress(LineProgress):
    def __init__(self) -> None:
        super().__init__(lambda _line: None)


@dataclass(frozen=True)
class TransactionRecord:
    """Who runs which transaction: what `status` shows as busy and `cancel` signals."""

    verb: str
    args: tuple[str, ...]
    uid: int
    pid: int
    command_line: str
    started: int

    @property
    def title(self) -> str:
        return " ".join([self.verb, *self.args])

    @property
    def initiator(self) -> str:
        return f"client(id:cli pid:{self.pid} uid:{self.uid}) {self.command_line}"


def active_transaction(sysroot: Sysroot) -> TransactionRecord | None:
    """The transaction holding the sysroot now, if its process is still alive."""
    path = sysroot.path / RECORD_PATH
    try:
        data = json.loads(path.read_text())
        record = TransactionRecord(data["verb"], tuple(data["args"]), int(data["uid"]), int(data["pid"]),
                                   str(data["command_line"]), int(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return record


def cancel_active(sysroot: Sysroot, *, timeout: float = 60.0) -> TransactionRecord | None:
    """Ask the transaction holding the sysroot to stop, and wait until it has let go of it."""
    record = active_transaction(sysroot)
    if record is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, CANCEL_SIGNAL)
    deadline = time.monotonic() + timeout
    while active_transaction(sysroot) == record:
        if time.monotonic() > deadline:
            raise StrataError(f"transaction '{record.title}' (pid {record.pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.05)
    return record


class Transaction:
    """`with Transaction(sysroot, verb, args, progress) as txn:` holds the sysroot for one change.

    Cancellation: the cancel signal stops the transaction at once while it works on scratch data (pulling,
    planning, assembling), and at the next checkpoint while it is inside `txn.critical()` (deploying); the
    work it leaves behind is only unreferenced scratch. Before a successful exit the invariants are checked
    (`check` = False skips them, for verbs that do not touch deployments)."""

    def __init__(self, sysroot: Sysroot, verb: str, args: Sequence[str], progress: Progress, *,
                 stateroot: str | None = None, check: bool = True, isolate: bool = True) -> None:
        self.sysroot = sysroot
        self.verb = verb
        self.args = tuple(args)
        self.progress = progress
        self.stateroot = stateroot
        self.check = check
        self.isolate = isolate  # other stateroots' pending deployments must stay as they are
        self._stack = contextlib.ExitStack()
        self._critical = 0
        self._committed = False
        self._cancel_requested = False
        self._before: dict[str, PendingSnapshot | None] | None = None
        self._created_dirs: list[Path] = []
        self._scratch_before: set[str] = set()
        self._broken_before: set[str] = set()

    # ------------------------------------------------------------ lifetime

    def __enter__(self) -> Transaction:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.sysroot.lock())
            except LockedError as exc:
                holder = active_transaction(self.sysroot)
                if holder is None:
                    raise
                raise LockedError(f"{exc}: {holder.title} (pid {holder.pid})") from None
            self._before = snapshot_pending(self.sysroot) if self.check and self.isolate else None
            self._broken_before = set(check_invariants(self.sysroot)) if self.check else set()
            self._scratch_before = self._scratch_entries()
            self._write_record()
            stack.callback(self._clear_record)
            previous = signal.signal(CANCEL_SIGNAL, self._on_cancel)
            stack.callback(signal.signal, CANCEL_SIGNAL, previous)
            stack.enter_context(reporting_to(self.progress))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is None:
                self.checkpoint()
                if self.check:
                    self._check_invariants()
                self.progress.finished(True, "")
            else:
                if isinstance(exc, CancelledError):
                    self._remove_scratch()
                self.progress.finished(False, str(exc))
        finally:
            self._stack.close()

    @property
    def log(self) -> Callable[[str], None]:
        """The message callback, for the lower layers that report plain lines."""
        return self.progress.message

    # ------------------------------------------------------------ cancellation

    def _on_cancel(self, _signum: int, _frame: FrameType | None) -> None:
        self._cancel_requested = True
        if self._critical == 0 and not self._committed:
            raise CancelledError("Transaction cancelled")

    def checkpoint(self, name: str | None = None) -> None:
        """A safe point: stop here if cancelled; tests may kill or pause the process here."""
        if name is not None:
            crash_point(name)
        if self._cancel_requested and not self._committed:
            raise CancelledError("Transaction cancelled")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section that runs to its end once started: it makes the change visible, so a cancel that arrives
        during or after it is too late and is ignored."""
        self.checkpoint()
        self._critical += 1
        try:
            yield
            self._committed = True
        finally:
            self._critical -= 1

    def _scratch_entries(self) -> set[str]:
        tmp = self.sysroot.repo.tmp_dir
        return set(os.listdir(tmp)) if tmp.is_dir() else set()

    def _remove_scratch(self) -> None:
        """What a cancelled transaction staged in the repository's tmp/ (nobody else writes there while the
        sysroot is locked)."""
        tmp = self.sysroot.repo.tmp_dir
        for name in self._scratch_entries() - self._scratch_before:
            path = tmp / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # ------------------------------------------------------------ record and invariants

    def _write_record(self) -> None:
        record = TransactionRecord(self.verb, self.args, os.getuid(), os.getpid(), _command_line(), int(time.time()))
        path = self.sysroot.path / RECORD_PATH
        self._created_dirs = [d for d in reversed(path.parents) if d.is_relative_to(self.sysroot.path)
                              and not d.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(asdict(record)).encode(), fsync=False)

    def _clear_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.sysroot.path / RECORD_PATH).unlink()
        for directory in reversed(self._created_dirs):  # leave the sysroot as the transaction found it
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _check_invariants(self) -> None:
        """Fail on what this transaction broke; damage found on entry (an admin's unreadable origin file, say)
        is not the transaction's doing and must not turn a completed change into a reported failure."""
        problems = check_invariants(self.sysroot, before=self._before, changed_stateroot=self.stateroot)
        new = [problem for problem in problems if problem not in self._broken_before]
        if new:
            raise InvariantError(new)


def _command_line() -> str:
    argv = list(sys.orig_argv) if hasattr(sys, "orig_argv") else sys.argv
    if len(argv) >= 3 and argv[1:3] == ["-m", "strata.cli.main"]:
        argv = ["strata", *argv[3:]]
    return " ".join(argv)
