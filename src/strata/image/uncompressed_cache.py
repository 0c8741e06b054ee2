"""ostree's uncompressed-objects-cache: the inflated regular files of an archive repository, kept as
REPO/uncompressed-objects-cache/XX/REST.file (bare form, setuid/setgid stripped), so that user-mode checkouts
of an archive repository hardlink instead of inflating every file again.

Only user-mode checkouts use it (ostree: the cache is in bare form, which only user mode can link), only when
the repository is writable and `core.enable-uncompressed-cache` is not false, and never for symlinks, empty
files or files their owner cannot read (those are copied, as ostree does). An entry is made complete in the
repository's tmp/ and linked in under its name, so a crash never leaves a partial entry there; an entry that
does not match its object's header (type, size, mode) is dropped and made again. prune and fsck do not look
at it; deleting it is always safe."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

from strata.errors import CorruptionError, NotFoundError
from strata.image import objects as O
from strata.image.repo import Repo, RepoMode

CACHE_DIR = "uncompressed-objects-cache"
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def cache_usable(repo: Repo) -> bool:
    """Whether checkouts of repo may use and fill the cache (ostree: archive, writable, enabled in config)."""
    if repo.mode is not RepoMode.ARCHIVE:
        return False
    if not repo.config.get_bool("core", "enable-uncompressed-cache", True):
        return False
    return os.access(repo.path / "objects", os.W_OK) and os.access(repo.tmp_dir, os.W_OK)


class UncompressedCache:
    """Entries of one repository's cache, found or made on demand; descriptors are opened lazily, so a
    forked checkout worker opens its own."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._root_fd: int | None = None
        self._tmp_fd: int | None = None
        self._prefix_fds: dict[str, int] = {}

    def close(self) -> None:
        for fd in [self._root_fd, self._tmp_fd, *self._prefix_fds.values()]:
            if fd is not None:
                os.close(fd)
        self._root_fd = self._tmp_fd = None
        self._prefix_fds.clear()

    def entry_for(self, checksum: str) -> tuple[int, str] | None:
        """(descriptor of the XX directory, name) of a valid entry for the object, made now if it was missing;
        None when the object is not one the cache holds."""
        meta, size = self._object_header(checksum)
        if meta.is_symlink or size == 0 or not meta.mode & stat.S_IRUSR:
            return None
        mode = stat.S_IMODE(meta.mode) & ~(stat.S_ISUID | stat.S_ISGID)
        prefix_fd = self._prefix_fd(checksum[:2])
        name = f"{checksum[2:]}.file"
        if not self._valid_entry(prefix_fd, name, size, mode):
            self._store(checksum, prefix_fd, name, mode)
        return prefix_fd, name

    def _object_header(self, checksum: str) -> tuple[O.FileMeta, int]:
        try:
            fd = os.open(self.repo.file_object_path(checksum), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"file object {checksum} not found") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptionError(f"file object {checksum} is a symlink") from None
            raise
        with os.fdopen(fd, "rb") as f:
            return O.read_archive_header(f.read)

    @staticmethod
    def _valid_entry(prefix_fd: int, name: str, size: int, mode: int) -> bool:
        """An existing entry of the right type, size and mode; anything else there is removed."""
        try:
            st = os.stat(name, dir_fd=prefix_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISREG(st.st_mode) and st.st_size == size and stat.S_IMODE(st.st_mode) == mode:
            return True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=prefix_fd)
        return False

    def _store(self, checksum: str, prefix_fd: int, name: str, mode: int) -> None:
        _meta, content = self.repo.read_file(checksum, verify=True)
        tmp_fd = self._tmp_dir_fd()
        tmp = f"uncompressed-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=tmp_fd)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
                os.utime(fd, (0, 0))
                if self.repo.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # made meanwhile by another checkout: same bytes
                os.link(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=prefix_fd, follow_symlinks=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=tmp_fd)

    def _prefix_fd(self, prefix: str) -> int:
        fd = self._prefix_fds.get(prefix)
        if fd is None:
            root = self._cache_root_fd()
            with contextlib.suppress(FileExistsError):
                os.mkdir(prefix, 0o775, dir_fd=root)
            fd = self._prefix_fds[prefix] = _open_dir(prefix, root)
        return fd

    def _cache_root_fd(self) -> int:
        if self._root_fd is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.repo.path / CACHE_DIR, 0o775)
            self._root_fd = _open_dir(str(self.repo.path / CACHE_DIR))
        return self._root_fd

    def _tmp_dir_fd(self) -> int:
        if self._tmp_fd is None:
            self._tmp_fd = _open_dir(str(self.repo.tmp_dir))
        return self._tmp_fd


def _open_dir(path: str, dir_fd: int | None = None) -> int:
    """A directory of the cache, never through a symlink (a repository is input like any other)."""
    try:
        return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # ELOOP: a symlink where a directory belongs
            raise CorruptionError(f"{CACHE_DIR}: {path} is not a directory") from None
        raise
