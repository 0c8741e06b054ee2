"""Reading a tree (a checkout, a deployment) as if it were /: absolute symlinks and `..` never leave it.

Trees come from packages and repositories, which are not trusted: a tree's usr/lib/os-release may be a
symlink to /etc/shadow of the machine that reads it. Everything sysroot/ and core/ read from a tree goes
through here. openat2(RESOLVE_IN_ROOT) does the resolution where the kernel has it (Linux 5.6); otherwise
a userspace resolver gives the same answer. Also: removing a tree of any depth without recursion."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from pathlib import Path

from strata.errors import StrataError

_SYS_OPENAT2 = 437  # the same number on every architecture (syscall table unification)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_LINKS = 40
_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None


def _parts(relpath: str) -> list[str]:
    return [p for p in relpath.split("/") if p and p != "."]


def open_in_root(root: Path, relpath: str, flags: int = os.O_RDONLY) -> int:
    """An fd for relpath resolved inside root (raises FileNotFoundError, NotADirectoryError, ...)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        return _open_beneath(root_fd, root, relpath, flags | os.O_CLOEXEC)
    finally:
        os.close(root_fd)


def _open_beneath(root_fd: int, root: Path, relpath: str, flags: int) -> int:
    global _openat2_works
    if _openat2_works is not False:
        how = struct.pack("QQQ", flags, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(relpath or "."), how, len(how))
        if fd >= 0:
            _openat2_works = True
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
            raise OSError(err, os.strerror(err), relpath)
        _openat2_works = False
    return os.open(resolve_path(root, relpath), flags | os.O_NOFOLLOW)


def resolve_path(root: Path, relpath: str) -> Path:
    """The path relpath names inside root, every symlink followed as if root were / (userspace resolver).
    Only the last component may be missing."""
    todo = _parts(relpath)
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            if todo:
                raise
            done.append(part)
            break
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), relpath)
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = _parts(target) + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), relpath)
        done.append(part)
    return root.joinpath(*done)


def real_path_in_root(root: Path, relpath: str) -> Path | None:
    """The physical path (no symlink left in it) of relpath resolved inside root, or None if absent."""
    try:
        fd = open_in_root(root, relpath, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StrataError(f"cannot resolve /{relpath.lstrip('/')} in the tree: {exc.strerror}") from exc
    try:
        physical = Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)
    top = Path(os.path.realpath(root))
    if physical != top and top not in physical.parents:
        raise StrataError(f"/{relpath.lstrip('/')} resolves outside the tree")
    return physical


def is_file_in_root(root: Path, relpath: str) -> bool:
    found = real_path_in_root(root, relpath)
    return found is not None and stat.S_ISREG(os.lstat(found).st_mode)


def read_in_root(root: Path, relpath: str, limit: int) -> bytes | None:
    """The content of a regular file relpath (resolved inside root), or None when there is none.
    Files over limit bytes are refused."""
    try:
        fd = open_in_root(root, relpath, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        raise StrataError(f"cannot open /{relpath.lstrip('/')} in the tree: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StrataError(f"/{relpath.lstrip('/')} in the tree is larger than {limit} bytes")
    return data


def lstat_in_tree(root: Path, relpath: str) -> os.stat_result | None:
    """lstat of relpath whose parent directories must all be real directories of the tree (no symlink
    followed anywhere); None if it does not exist."""
    parts = _parts(relpath)
    if ".." in parts:
        raise StrataError(f"invalid path in tree: {relpath}")
    path = root
    for index, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if index < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise StrataError(f"/{'/'.join(parts[:index + 1])} in the tree is not a directory")
    return os.lstat(path)


def require_real_dir(root: Path, relpath: str) -> None:
    """relpath must be a directory of the tree reached without following any symlink."""
    st = lstat_in_tree(root, relpath)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise StrataError(f"/{relpath.strip('/')} in the tree is not a directory")


def remove_tree(path: Path) -> None:
    """rm -rf without recursion or long paths: works for a chain of any depth, never follows symlinks."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    stack: list[tuple[str, list[str]]] = [("", _clear_files(fd))]  # (name in its parent, subdirectories left)
    try:
        while True:
            name, subdirs = stack[-1]
            if subdirs:
                child_name = subdirs.pop()
                child = os.open(child_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                stack.append((child_name, _clear_files(fd)))
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory entry of the directory fd; returns its subdirectory names."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs
