"""Small filesystem helpers shared by the image and sysroot layers: atomic writes, xattrs, locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from strata.errors import InvalidInputError, LockedError, StrataError


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Write data to path so that readers see either the old or the complete new content."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_symlink(target: str, path: Path) -> None:
    """Point the symlink at path to target, replacing any old link atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    try:
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_file(path: str | os.PathLike[str]) -> None:
    if os.path.islink(path):
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the filesystem holding path (syncfs(2), as ostree commits a transaction), not every mounted one:
    on a shared machine sync() also waits for everybody else's dirty data."""
    import ctypes  # only here: most commands never sync

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "syncfs"):
            os.sync()
        elif libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}", str(path))
    finally:
        os.close(fd)


def read_xattrs(path: str | os.PathLike[str], *, follow_symlinks: bool = False) -> list[tuple[bytes, bytes]]:
    """All extended attributes of path, sorted by name (empty if the filesystem has none)."""
    try:
        names = os.listxattr(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise
    result = []
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP):
                continue
            raise
        result.append((name.encode("utf-8", "surrogateescape"), value))
    result.sort(key=lambda kv: kv[0])
    return result


def apply_xattrs(path: str | os.PathLike[str] | int,
                 xattrs: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
                 *, follow_symlinks: bool = False) -> None:
    """Set xattrs on a path, or on an open descriptor (an int)."""
    for name, value in xattrs:
        key = name.decode("utf-8", "surrogateescape")
        if isinstance(path, int):
            os.setxattr(path, key, value)
        else:
            os.setxattr(path, key, value, follow_symlinks=follow_symlinks)


@contextlib.contextmanager
def flock(path: Path, *, exclusive: bool, wait: bool = True, what: str = "repository") -> Iterator[None]:
    """Hold an flock on path (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, op | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockedError(f"{what} is locked by another process: {path}") from None
        yield
    finally:
        os.close(fd)


def ensure_writable_dir(path: Path) -> None:
    if not os.access(path, os.W_OK):
        raise StrataError(f"{path} is read-only")


class TooLargeError(InvalidInputError):
    """A file read with read_capped was larger than its cap."""


def read_capped(path: Path, limit: int, what: str = "") -> bytes:
    """The bytes of a file that may be at most limit bytes long (untrusted or user-given input is never read
    whole before its size is known); larger: TooLargeError naming path and what it is."""
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"{path}: {what + ' ' if what else ''}larger than {limit} bytes")
    return data
