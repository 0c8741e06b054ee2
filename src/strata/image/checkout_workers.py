"""A large checkout filled by forked worker processes, so the cores do link()/mkdir() work without sharing
an interpreter lock, and with cold caches some wait for the disk while others link.

The parent forks once the tree has shown itself large (it filled the first directories itself), so the
workers inherit the open repository, the decoded directory metadata and the directories still to fill.
Each worker fills the directories (or slices of a large directory's files) it is given, depth first. When
one runs out of work the parent raises a shared flag; the first busy worker to see it hands back the
shallower half of its pending directories, which the parent passes on. Messages go over one socket pair per
worker. The first error a worker meets comes back as one message and is raised in the parent; the parent
kills and reaps every worker on error or interrupt, and the kernel kills a worker whose parent dies."""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from strata import errors

# (dirtree, dirmeta, path of the existing directory, made by us, depth, first file, end file): a whole
# directory when the end is -1, else only that slice of its files (a large directory is shared out in slices)
Item = tuple[str, str, str, bool, int, int, int]

_TASK, _SPLIT, _IDLE, _PROGRESS, _ERROR, _EXIT, _DONE = b"T", b"S", b"I", b"P", b"E", b"X", b"D"
_PROGRESS_EVERY = 512  # files placed between progress messages of a worker
LOCAL_ANCHOR = "/proc/self/fd/"  # a path through a descriptor that a worker opened is only its own
_PR_SET_PDEATHSIG = 1


class Filler(Protocol):
    """What the workers drive: fill one directory, hold back the ones whose metadata must wait."""

    files_placed: int
    deferred: list[Item]

    def fill(self, item: Item) -> list[Item]:
        """Place the directory's files and create its subdirectories; returns those, still to fill."""

    def finish(self, deferred: list[Item]) -> None:
        """Apply the metadata of directories held back, deepest first."""


@dataclass
class _Worker:
    pid: int
    sock: socket.socket
    busy: bool = False
    reaped: bool = False


def fill_in_workers(filler: Filler, pending: list[Item], workers: int,
                    files_done: Callable[[int], None] | None) -> list[Item]:
    """Fill pending (and everything below) on `workers` processes; returns the directories whose metadata
    the workers held back for the parent (to apply after everything below them is filled)."""
    flag = mmap.mmap(-1, 1)  # shared with the children: 1 = a worker is idle and the parent has no work
    procs: list[_Worker] = []
    try:
        prctl = _load_prctl()
        for _ in range(workers):
            procs.append(_spawn(filler, flag, procs, prctl))
        deferred = _dispatch(procs, list(pending), flag, files_done)
        for proc in procs:
            _send(proc.sock, _EXIT)
        for proc in procs:
            deferred += _await_done(proc)
            _reap(proc)
        return deferred
    finally:
        for proc in procs:
            if not proc.reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                _reap(proc)
            proc.sock.close()
        flag.close()


def _dispatch(procs: list[_Worker], queue: list[Item], flag: mmap.mmap,
              files_done: Callable[[int], None] | None) -> list[Item]:
    deferred: list[Item] = []
    by_fd = {proc.sock.fileno(): proc for proc in procs}
    while True:
        idle = [proc for proc in procs if not proc.busy]
        if queue and idle:
            for i, proc in enumerate(idle):  # every idle worker a share, shallow and deep alike
                share = queue[i::len(idle)]
                if share:
                    _send(proc.sock, _TASK + _encode_items(share))
                    proc.busy = True
            queue.clear()
            idle = [proc for proc in procs if not proc.busy]
        if len(idle) == len(procs):
            return deferred
        flag[0] = 1 if idle else 0
        readable, _, _ = select.select(list(by_fd), [], [])
        for fd in readable:
            proc = by_fd[fd]
            message = _recv(proc)
            kind, payload = message[:1], message[1:]
            if kind == _SPLIT:
                queue += _decode_items(payload)
            elif kind == _PROGRESS and files_done is not None:
                files_done(int(payload))
            elif kind == _IDLE:
                count, _, rest = payload.partition(b"\0")
                if files_done is not None and int(count):
                    files_done(int(count))
                deferred += _decode_items(rest)
                proc.busy = False
            elif kind == _ERROR:
                _raise_reported(payload)


def _await_done(proc: _Worker) -> list[Item]:
    message = _recv(proc)
    if message[:1] == _ERROR:
        _raise_reported(message[1:])
    return _decode_items(message[1:])


def _reap(proc: _Worker) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, 0)
    proc.reaped = True


# ---------------------------------------------------------------- the worker side


def _spawn(filler: Filler, flag: mmap.mmap, earlier: list[_Worker], prctl: Callable[[int, int], int] | None
           ) -> _Worker:
    parent_end, child_end = socket.socketpair()
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # never returns: the parent's stack (its finally blocks, its cleanup) must not run here
        status = 1
        try:
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent_pid:
                os._exit(1)
            for signum in (signal.SIGINT, signal.SIGTERM):  # the parent's handlers (a transaction's cancel)
                signal.signal(signum, signal.SIG_DFL)          # are the parent's; the parent reaps us
            parent_end.close()
            for other in earlier:
                other.sock.close()
            status = _worker_main(filler, child_end, flag)
        finally:
            os._exit(status)
    child_end.close()
    return _Worker(pid, parent_end)


def _worker_main(filler: Filler, sock: socket.socket, flag: mmap.mmap) -> int:
    try:
        while True:
            message = _recv_from(sock)
            if message[:1] == _EXIT:
                local = [item for item in filler.deferred if item[2].startswith(LOCAL_ANCHOR)]
                filler.finish(local)
                _send(sock, _DONE)
                return 0
            _work_through(filler, sock, flag, _decode_items(message[1:]))
            shared = [item for item in filler.deferred if not item[2].startswith(LOCAL_ANCHOR)]
            filler.deferred = [item for item in filler.deferred if item[2].startswith(LOCAL_ANCHOR)]
            _send(sock, _IDLE + str(filler.files_placed).encode() + b"\0" + _encode_items(shared))
            filler.files_placed = 0
    except BaseException as exc:  # every failure, interrupts too, goes back to the parent as one message
        with contextlib.suppress(OSError):
            _send(sock, _ERROR + _encode_error(exc))
        return 1


def _work_through(filler: Filler, sock: socket.socket, flag: mmap.mmap, stack: list[Item]) -> None:
    stack.reverse()
    while stack:
        children = filler.fill(stack.pop())
        children.reverse()
        stack += children
        if flag[0] and len(stack) > 1:
            _give_away(sock, flag, stack)
        if filler.files_placed >= _PROGRESS_EVERY:
            _send(sock, _PROGRESS + str(filler.files_placed).encode())
            filler.files_placed = 0


def _give_away(sock: socket.socket, flag: mmap.mmap, stack: list[Item]) -> None:
    """Hand the shallower half of the pending directories (the bottom of the stack) back to the parent."""
    flag[0] = 0
    half = len(stack) // 2
    given = [item for item in stack[:half] if not item[2].startswith(LOCAL_ANCHOR)]
    if given:
        stack[:half] = [item for item in stack[:half] if item[2].startswith(LOCAL_ANCHOR)]
        _send(sock, _SPLIT + _encode_items(given))


def _load_prctl() -> Callable[[int, int], int] | None:
    """libc's prctl, loaded before forking (PR_SET_PDEATHSIG: a worker dies with its parent)."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError, ImportError):
        return None


# ---------------------------------------------------------------- messages


def _send(sock: socket.socket, message: bytes) -> None:
    sock.sendall(len(message).to_bytes(4, "big") + message)


def _recv(proc: _Worker) -> bytes:
    try:
        return _recv_from(proc.sock)
    except EOFError:
        raise errors.StrataError(f"checkout worker {proc.pid} exited unexpectedly") from None


def _recv_from(sock: socket.socket) -> bytes:
    length = int.from_bytes(_recv_exactly(sock, 4), "big")
    return _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _encode_items(items: list[Item]) -> bytes:
    """Fields joined by NUL: names in a tree never hold one, nor does a path the kernel accepts."""
    fields: list[bytes] = []
    for tree, meta, path, created, depth, first, end in items:
        fields += [tree.encode(), meta.encode(), b"1" if created else b"0", b"%d" % depth, b"%d" % first,
                   b"%d" % end, os.fsencode(path)]
    return b"\0".join(fields)


def _decode_items(data: bytes) -> list[Item]:
    if not data:
        return []
    fields = data.split(b"\0")
    return [(fields[i].decode(), fields[i + 1].decode(), os.fsdecode(fields[i + 6]), fields[i + 2] == b"1",
             int(fields[i + 3]), int(fields[i + 4]), int(fields[i + 5])) for i in range(0, len(fields), 7)]


def _encode_error(exc: BaseException) -> bytes:
    if isinstance(exc, OSError):
        fields = ["os", str(exc.errno or 0), exc.strerror or str(exc), os.fsdecode(exc.filename or "")]
    elif isinstance(exc, errors.MissingFileObjectError):
        fields = ["strata", type(exc).__name__, str(exc), exc.checksum]
    elif isinstance(exc, errors.StrataError):
        fields = ["strata", type(exc).__name__, str(exc), ""]
    else:
        fields = ["other", type(exc).__name__, str(exc), ""]
    return b"\0".join(field.replace("\0", " ").encode("utf-8", "surrogateescape") for field in fields)


def _raise_reported(payload: bytes) -> None:
    kind, detail, message, filename = (field.decode("utf-8", "surrogateescape") for field in payload.split(b"\0"))
    if kind == "os":
        raise OSError(int(detail), message, *([filename] if filename else []))
    if kind == "strata":
        cls = getattr(errors, detail, None)
        if cls is errors.MissingFileObjectError:
            raise errors.MissingFileObjectError(filename)
        if isinstance(cls, type) and issubclass(cls, errors.StrataError):
            raise cls(message)
        raise errors.StrataError(message)
    if detail == "KeyboardInterrupt":
        raise KeyboardInterrupt
    raise errors.StrataError(f"checkout worker failed: {detail}: {message}")
