"""Checking out a commit (or a subtree of it) into a directory: hardlinks where modes allow, else copies.

The walk is link()/mkdir()-bound, so it works relative to directory descriptors (one per object prefix
directory of the repository, one per destination directory being filled) instead of resolving full paths.
A directory's own metadata is applied as soon as its entries are in place (its mtime no longer changes
then), so the walk keeps no list of every directory. A large tree is filled by forked worker processes
(checkout_workers): the parent fills the first _FORK_AFTER_FILES files itself, so small checkouts never fork.
Archive repositories checked out in user mode link from ostree's uncompressed-objects-cache."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from strata.errors import CorruptionError, InvalidInputError, MissingFileObjectError, NotFoundError, StrataError
from strata.image.checkout_workers import LOCAL_ANCHOR, Item, fill_in_workers
from strata.image.objects import DirMeta, DirTree, FileMeta, content_checksum, decode_ostreemeta
from strata.image.repo import OSTREEMETA_XATTR, Repo, RepoMode
from strata.image.uncompressed_cache import UncompressedCache, cache_usable

_LINK_FALLBACK_ERRNOS = (errno.EXDEV, errno.EMLINK, errno.EPERM)
_ANCHOR_AT = 2048  # bytes of path; PATH_MAX is 4096 and a name adds at most 255
WHITEOUT_PREFIX = ".ostree-wh."
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_CHUNK = 1 << 16  # a dirtree is a few kB: one read() each, no MB-sized buffer per read
_FORK_AFTER_FILES = 1000  # files placed in-process before a checkout with more to do forks its workers
_SLICE_FILES = 2048  # a directory with more files is filled in slices of this many, shared among the workers
_MAX_WORKERS = 8
_MAX_SYMLINK_OBJECT = 4096  # a bare-user symlink object: the target (at most PATH_MAX - 1 bytes) and a NUL


@dataclass
class CheckoutOptions:
    user_mode: bool = False  # do not chown, strip setuid/setgid, no xattrs
    union: bool = False  # overwrite files that already exist in the destination
    require_hardlinks: bool = False
    force_copy: bool = False
    subpath: str = ""
    union_add: bool = False  # like union, but files already in the destination are kept (ostree --union-add)
    files_done: Callable[[int], None] | None = None  # file counts as they are placed (progress; main thread)
    # ostree --disable-cache: an archive repository checked out in user mode neither uses nor fills its
    # uncompressed-objects-cache (by default it does, as ostree's command line)
    no_cache: bool = False
    # ostree --process-passthrough-whiteouts: a file named .ostree-wh.NAME becomes NAME, an overlayfs whiteout
    # (a character device 0:0), so a tree can carry whiteouts without holding device nodes in the repository
    process_whiteouts: bool = False
    # ostree -M/--bareuseronly-dirs (always so from a bare-user-only repository): directories get no mode bits
    # outside 0775 (no setuid, setgid, sticky or world-write)
    bareuseronly_dirs: bool = False


def checkout_commit(repo: Repo, commit: str, dest: Path, options: CheckoutOptions | None = None) -> None:
    loaded = repo.load_commit(commit)
    checkout_tree(repo, (loaded.root_tree, loaded.root_meta), dest, options)


def checkout_tree(repo: Repo, root: tuple[str, str], dest: Path, options: CheckoutOptions | None = None) -> None:
    opts = options or CheckoutOptions()
    kind, target = _resolve_subpath(repo, root, opts.subpath)
    job = _Checkout(repo, opts)
    if opts.require_hardlinks and not job.can_link:
        raise StrataError(f"hardlinks were required, but a {repo.mode.value} repository cannot be checked out "
                          f"by hardlinks in {'user' if opts.user_mode else 'root'} mode")
    try:
        if kind == "file":
            if dest.exists() and dest.is_dir():
                dest = dest / Path(opts.subpath).name
            job.checkout_single_file(target[0], str(dest))
        else:
            path = str(dest)
            created = job.make_top_dir(path)
            _fill_tree(job, (target[0], target[1], path, created, 0, 0, -1))
    finally:
        job.close()


def _resolve_subpath(repo: Repo, root: tuple[str, str], subpath: str) -> tuple[str, tuple[str, str]]:
    parts = [p for p in subpath.strip("/").split("/") if p]
    tree, meta = root
    for i, part in enumerate(parts):
        loaded = repo.load_dirtree(tree)
        if part in loaded.dirs:
            tree, meta = loaded.dirs[part]
        elif part in loaded.files and i == len(parts) - 1:
            return "file", (loaded.files[part], "")
        else:
            raise NotFoundError(f"no such file or directory in commit: /{'/'.join(parts[:i + 1])}")
    return "dir", (tree, meta)


def _fill_tree(job: _Checkout, top: Item) -> None:
    """Depth first from top; once the tree has shown itself large, the rest on worker processes."""
    files_done = job.opts.files_done
    placed = 0
    stack = [top]
    held_back: list[Item] = []
    while stack:
        if placed + job.files_in(stack[-1]) >= _FORK_AFTER_FILES and (workers := _worker_count()) > 1:
            held_back = fill_in_workers(job, stack, workers, files_done)
            break
        children = job.fill(stack.pop())
        children.reverse()  # popped from the end: the first subdirectory next
        stack += children
        placed += job.files_placed
        if files_done is not None and job.files_placed:
            files_done(job.files_placed)
        job.files_placed = 0
    job.finish([*job.deferred, *held_back])


def _worker_count() -> int:
    """Processes for the rest of a large checkout: two per usable CPU, so that with cold caches one waits
    for the disk while the other links. Only from a single-threaded process (a fork copies one thread;
    locks other threads hold would stay held in the child)."""
    if threading.active_count() != 1 or not hasattr(os, "fork"):
        return 1
    cpus = len(os.sched_getaffinity(0))
    return 1 if cpus < 2 else min(2 * cpus, _MAX_WORKERS)


class _Checkout:
    """Fills directories of one checkout (the Filler that checkout_workers drives)."""

    def __init__(self, repo: Repo, opts: CheckoutOptions) -> None:
        self.repo = repo
        self.opts = opts
        mode = repo.mode
        self.can_link = not opts.force_copy and (
            (mode is RepoMode.BARE and not opts.user_mode)
            or (mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and opts.user_mode))
        self.cache = (UncompressedCache(repo) if opts.user_mode and not opts.force_copy and not opts.no_cache
                      and cache_usable(repo) else None)
        self.files_placed = 0  # since the driver last took the count
        self.deferred: list[Item] = []  # directories whose metadata must wait for everything below them
        self._dirmeta: dict[str, DirMeta] = {}
        self._trees: dict[str, DirTree] = {}  # the last dirtree decoded, and the large ones
        self._large_trees: dict[str, DirTree] = {}
        self._empty_checksums: dict[bytes, str] = {}  # bare-user xattr value -> checksum of such an empty file
        self._anchors: list[int] = []
        self._objects = str(repo.path / "objects")
        self._ext = ".filez" if repo.is_archive else ".file"
        self._prefix_fds: dict[str, int] = {}
        self._objects_fd: int | None = None
        self._privileged = os.geteuid() == 0

    def close(self) -> None:
        for fd in [*self._anchors, *self._prefix_fds.values()]:
            os.close(fd)
        if self._objects_fd is not None:
            os.close(self._objects_fd)
            self._objects_fd = None
        self._anchors.clear()
        self._prefix_fds.clear()
        if self.cache is not None:
            self.cache.close()

    # ------------------------------------------------------------ objects

    def _prefix_fd(self, prefix: str) -> int:
        """A descriptor of objects/XX, opened on first use: links and reads then resolve one name."""
        fd = self._prefix_fds.get(prefix)
        if fd is None:
            if self._objects_fd is None:
                self._objects_fd = os.open(self._objects, _DIR_FLAGS)
            try:
                fd = os.open(prefix, _DIR_FLAGS, dir_fd=self._objects_fd)
            except FileNotFoundError:
                fd = -1  # no object with this prefix: every lookup there fails as not found
            self._prefix_fds[prefix] = fd
        return fd

    def _read_object(self, checksum: str, ext: str, what: str) -> bytes:
        prefix_fd = self._prefix_fd(checksum[:2])
        try:
            if prefix_fd < 0:
                raise FileNotFoundError
            fd = os.open(checksum[2:] + ext, _READ_FLAGS, dir_fd=prefix_fd)
        except FileNotFoundError:
            raise NotFoundError(f"{what} object {checksum} not found") from None
        try:
            chunks = [os.read(fd, _READ_CHUNK)]
            while len(chunks[-1]) == _READ_CHUNK:  # a short read of a regular file is its end
                chunks.append(os.read(fd, _READ_CHUNK))
        finally:
            os.close(fd)
        return b"".join(chunks)

    def dirtree(self, checksum: str) -> DirTree:
        """Decoded (names validated: strict=False still refuses bad names and order); the last one and the
        large ones (read by each of their slices) are kept."""
        tree = self._trees.get(checksum)
        if tree is None:
            tree = DirTree.parse(self._read_object(checksum, ".dirtree", "dirtree"), strict=False)
            self._trees = {checksum: tree, **self._large_trees}
            if len(tree.files) > _SLICE_FILES:
                self._large_trees[checksum] = tree
        return tree

    def files_in(self, item: Item) -> int:
        tree_csum, _meta, _path, _created, _depth, first, end = item
        return (end if end >= 0 else len(self.dirtree(tree_csum).files)) - first

    def dirmeta(self, checksum: str) -> DirMeta:
        meta = self._dirmeta.get(checksum)
        if meta is None:
            meta = self._dirmeta[checksum] = DirMeta.parse(self._read_object(checksum, ".dirmeta", "dirmeta"),
                                                           strict=False)
        return meta

    # ------------------------------------------------------------ directories

    def make_top_dir(self, path: str) -> bool:
        """Create the destination (or accept an empty one, or any with union); whether it was created."""
        try:
            os.mkdir(path, 0o700)
            return True
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                raise StrataError(f"cannot check out directory over non-directory {path}") from None
            if not self.opts.union and os.listdir(path):
                raise StrataError(f"destination {path} already exists") from None
            return False
        except FileNotFoundError:
            raise NotFoundError(f"parent directory of {path} does not exist") from None

    def fill(self, item: Item) -> list[Item]:
        """Fill one existing directory: its subdirectories created empty, its files, then its own metadata;
        returns the subdirectories, still to fill. A large directory keeps its first slice of files and
        returns the others as items of their own; its metadata then waits for the end (the parent's).
        An item that is a slice places just those files."""
        tree_csum, meta_csum, path, created, depth, first, end = item
        tree = self.dirtree(tree_csum)
        dir_fd = os.open(path, _DIR_FLAGS)
        try:
            if end >= 0:
                self._place_files(dir_fd, path, islice(tree.files.items(), first, end))
                self.files_placed += end - first
                return []
            meta = self.dirmeta(meta_csum)
            children: list[Item] = [
                (sub_tree, sub_meta, self._child_path(path, name), self._make_subdir(dir_fd, name, path),
                 depth + 1, 0, -1) for name, (sub_tree, sub_meta) in tree.dirs.items()]
            count = len(tree.files)
            sliced = count > _SLICE_FILES and not path.startswith(LOCAL_ANCHOR)
            if sliced:
                children += [(tree_csum, meta_csum, path, created, depth, start, min(start + _SLICE_FILES, count))
                             for start in range(_SLICE_FILES, count, _SLICE_FILES)]
                count = _SLICE_FILES
            self._place_files(dir_fd, path, islice(tree.files.items(), count))
            self.files_placed += count
        finally:
            os.close(dir_fd)
        if sliced or self._must_wait(meta):
            self.deferred.append(item)
        else:
            self._apply_dir_metadata(path, meta, created)
        return children

    def _place_files(self, dir_fd: int, path: str, entries: Iterable[tuple[str, str]]) -> None:
        if self.opts.process_whiteouts:
            entries = list(entries)
            for name, checksum in entries:
                if name.startswith(WHITEOUT_PREFIX):
                    self._place_whiteout(checksum, dir_fd, name, path)
            entries = [(name, checksum) for name, checksum in entries if not name.startswith(WHITEOUT_PREFIX)]
        if self.can_link and not (self.opts.union or self.opts.union_add):
            for name, checksum in self._link_files(dir_fd, path, entries):
                self.copy_file(checksum, dir_fd, name, path)  # known not to be linkable: no second try
        else:
            for name, checksum in entries:
                self.place_file(checksum, dir_fd, name, path)

    def _must_wait(self, meta: DirMeta) -> bool:
        """A directory its owner may not write or search could block filling what is below it: unless we
        are root (who may anyway) or in user mode (owner rwx is always kept), its mode is applied last."""
        return not self.opts.user_mode and not self._privileged and meta.mode & 0o700 != 0o700

    def finish(self, deferred: list[Item]) -> None:
        """The metadata held back, deepest directories first (everything below them is filled by now)."""
        for _tree, meta_csum, path, created, _depth, _first, _end in sorted(deferred, key=lambda item: -item[4]):
            self._apply_dir_metadata(path, self.dirmeta(meta_csum), created)

    def _make_subdir(self, dir_fd: int, name: str, path: str) -> bool:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            return True
        except FileExistsError:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise StrataError(f"cannot check out directory over non-directory {path}/{name}") from None
            if not self.opts.union:
                raise StrataError(f"destination {path}/{name} already exists") from None
            return False

    def _child_path(self, path: str, name: str) -> str:
        """path/name, kept short enough for the kernel (PATH_MAX): past _ANCHOR_AT bytes the walk
        continues from an O_PATH descriptor of the directory, through /proc/self/fd."""
        if len(path) < _ANCHOR_AT:
            return f"{path}/{name}"
        fd = os.open(path, _DIR_FLAGS)
        self._anchors.append(fd)
        return f"/proc/self/fd/{fd}/{name}"

    def _apply_dir_metadata(self, path: str, meta: DirMeta, created: bool) -> None:
        apply_dir_metadata(path, meta, user_mode=self.opts.user_mode, reset_mtime=created,
                           bareuseronly=self.opts.bareuseronly_dirs or self.repo.mode is RepoMode.BARE_USER_ONLY)

    # ------------------------------------------------------------ files

    def _link_files(self, dir_fd: int, path: str, files: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Hardlink every file of a directory that can be; returns the (name, checksum) left to copy. The hot
        loop of a checkout: two system calls per file, the link relative to open directories. Empty files
        are copied (ostree: no EMLINK). A bare-user repository is asked for the object's xattr instead of
        its size: the xattr tells a symlink (a regular file in the store, made a symlink here) and gives the
        checksum an empty file would have, so no stat() is needed."""
        prefix_fds = self._prefix_fds
        ext = self._ext
        objects = self._objects
        bare_user = self.repo.mode is RepoMode.BARE_USER
        empty_checksums = self._empty_checksums
        require = self.opts.require_hardlinks
        copies: list[tuple[str, str]] = []
        for name, checksum in files:
            prefix = checksum[:2]
            prefix_fd = prefix_fds.get(prefix)
            if prefix_fd is None:
                prefix_fd = self._prefix_fd(prefix)
            rest = checksum[2:] + ext
            if bare_user:
                value = self._ostreemeta(checksum, f"{objects}/{prefix}/{rest}")
                empty = empty_checksums.get(value)
                if empty is None:
                    empty = self._empty_checksum(value)
                if not empty:
                    self._copy_bare_user_symlink(checksum, value, prefix_fd, rest, dir_fd, name, path)
                    continue
                if empty == checksum:
                    copies.append((name, checksum))
                    continue
            else:
                try:
                    if prefix_fd < 0:
                        raise FileNotFoundError
                    st = os.stat(rest, dir_fd=prefix_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise MissingFileObjectError(checksum) from None
                if st.st_size == 0 and stat.S_ISREG(st.st_mode):
                    copies.append((name, checksum))
                    continue
            try:
                os.link(rest, name, src_dir_fd=prefix_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise StrataError(f"{path}/{name} already exists") from None
            except OSError as exc:
                if exc.errno in _LINK_FALLBACK_ERRNOS and not require:
                    copies.append((name, checksum))
                    continue
                raise
        return copies

    def _empty_checksum(self, ostreemeta: bytes) -> str:
        """The checksum of an empty regular file with this bare-user metadata ("" for a symlink's); a tree
        has few distinct owner/mode/xattr combinations, so this is computed once for each."""
        uid, gid, mode, xattrs = decode_ostreemeta(ostreemeta)
        empty = "" if stat.S_ISLNK(mode) else content_checksum(FileMeta(uid, gid, mode, "", tuple(xattrs)))
        self._empty_checksums[ostreemeta] = empty
        return empty

    @staticmethod
    def _ostreemeta(checksum: str, path: str) -> bytes:
        try:
            return os.getxattr(path, OSTREEMETA_XATTR, follow_symlinks=False)
        except FileNotFoundError:
            raise MissingFileObjectError(checksum) from None
        except OSError:
            raise StrataError(f"file object {checksum} has no {OSTREEMETA_XATTR}") from None

    def _copy_bare_user_symlink(self, checksum: str, ostreemeta: bytes, prefix_fd: int, rest: str, dir_fd: int,
                                name: str, path: str) -> None:
        """A bare-user symlink object (a regular file holding the target and a NUL) made a symlink, from the
        xattr the hot loop already read; checked against its name like every copy."""
        uid, gid, mode, xattrs = decode_ostreemeta(ostreemeta)
        fd = os.open(rest, _READ_FLAGS, dir_fd=prefix_fd)
        try:
            data = os.read(fd, _MAX_SYMLINK_OBJECT + 1)
        finally:
            os.close(fd)
        if not data.endswith(b"\0"):
            raise CorruptionError(f"bare-user symlink object {checksum} lacks its NUL terminator")
        meta = FileMeta(uid, gid, mode, data[:-1].decode("utf-8", "surrogateescape"), tuple(xattrs))
        meta.validate()
        actual = content_checksum(meta)
        if actual != checksum:
            raise CorruptionError(f"corrupted file object {checksum} (actual {actual})")
        self._write_copy(meta, b"", dir_fd, name, path)

    def _place_whiteout(self, checksum: str, dir_fd: int, name: str, path: str) -> None:
        meta = self.repo.read_file_meta(checksum)
        if meta.is_symlink:  # only regular files stand for whiteouts, as in ostree
            self.place_file(checksum, dir_fd, name, path)
            return
        target = name[len(WHITEOUT_PREFIX):]
        if not target:
            raise InvalidInputError(f"Invalid empty overlayfs whiteout '{path}/{name}'")
        mode = meta.mode & 0o7777

        def make_whiteout(tmp: str) -> None:
            os.mknod(tmp, mode | stat.S_IFCHR, os.makedev(0, 0), dir_fd=dir_fd)
            if not self.opts.user_mode:
                os.chown(tmp, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
                _apply_xattrs(f"{path}/{tmp}", meta.xattrs)
                os.chmod(tmp, mode, dir_fd=dir_fd)
        self._replace(dir_fd, target, path, make_whiteout)

    def checkout_single_file(self, checksum: str, dest: str) -> None:
        parent, _, name = dest.rpartition("/")
        dir_fd = os.open(parent or ("/" if dest.startswith("/") else "."), _DIR_FLAGS)  # "name" alone: cwd
        try:
            self.place_file(checksum, dir_fd, name, parent)
        finally:
            os.close(dir_fd)

    def place_file(self, checksum: str, dir_fd: int, name: str, path: str) -> None:
        """One file by the slow path: union modes, copies, and what the hot loop left over."""
        if self.opts.union_add:
            with contextlib.suppress(FileNotFoundError):
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                return
        if self.can_link and self._try_link(checksum, dir_fd, name, path):
            return
        if self.cache is not None and self._link_from_cache(checksum, dir_fd, name, path):
            return
        self.copy_file(checksum, dir_fd, name, path)

    def _link_from_cache(self, checksum: str, dir_fd: int, name: str, path: str) -> bool:
        """Hardlink the object's uncompressed-objects-cache entry (made now if missing); False when the
        object is not cached (symlinks, empty files) or the link cannot be made (then it is copied)."""
        assert self.cache is not None
        entry = self.cache.entry_for(checksum)
        if entry is None:
            return False
        cache_fd, cache_name = entry
        try:
            self._replace(dir_fd, name, path, lambda tmp: os.link(cache_name, tmp, src_dir_fd=cache_fd,
                                                                  dst_dir_fd=dir_fd, follow_symlinks=False))
        except OSError as exc:
            if exc.errno in _LINK_FALLBACK_ERRNOS:
                return False
            raise
        return True

    def copy_file(self, checksum: str, dir_fd: int, name: str, path: str) -> None:
        meta, content = self.repo.read_file(checksum, verify=True)
        self._write_copy(meta, content, dir_fd, name, path)

    def _try_link(self, checksum: str, dir_fd: int, name: str, path: str) -> bool:
        src = self.repo.file_object_path(checksum)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            raise MissingFileObjectError(checksum) from None
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            return False
        if self.repo.mode is RepoMode.BARE_USER and self.repo.is_symlink_object(checksum, st):
            return False
        try:
            self._replace(dir_fd, name, path, lambda tmp: os.link(src, tmp, dst_dir_fd=dir_fd,
                                                                  follow_symlinks=False))
        except OSError as exc:
            if exc.errno in _LINK_FALLBACK_ERRNOS and not self.opts.require_hardlinks:
                return False
            raise
        return True

    def _write_copy(self, meta: FileMeta, content: bytes, dir_fd: int, name: str, path: str) -> None:
        user_mode = self.opts.user_mode
        if meta.is_symlink:
            def make_link(tmp: str) -> None:
                os.symlink(meta.symlink_target, tmp, dir_fd=dir_fd)
                if not user_mode:
                    os.chown(tmp, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
                    _apply_xattrs(f"{path}/{tmp}", meta.xattrs)
                os.utime(tmp, (0, 0), dir_fd=dir_fd, follow_symlinks=False)
            self._replace(dir_fd, name, path, make_link)
            return
        mode = meta.mode & 0o7777
        if user_mode:  # as ostree: no setuid/setgid, and the user can read what was checked out for them
            mode = (mode & ~(stat.S_ISUID | stat.S_ISGID)) | stat.S_IRUSR

        def make_file(tmp: str) -> None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                if not user_mode:
                    os.fchown(fd, meta.uid, meta.gid)
                    _apply_xattrs(fd, meta.xattrs)
                os.fchmod(fd, mode)
                os.utime(fd, (0, 0))
            finally:
                os.close(fd)
        self._replace(dir_fd, name, path, make_file)

    def _replace(self, dir_fd: int, name: str, path: str, make: Callable[[str], None]) -> None:
        """Create name in dir_fd through make(name); with union an existing file is replaced by rename."""
        if not self.opts.union:
            try:
                make(name)
            except FileExistsError:
                raise StrataError(f"{path}/{name} already exists") from None
            return
        tmp = f".strata-co-{secrets.token_hex(6)}"
        make(tmp)
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise InvalidInputError(f"cannot replace directory {path}/{name} with a file")
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)


def apply_dir_metadata(path: str | Path, meta: DirMeta, *, user_mode: bool = False, bareuseronly: bool = False,
                       reset_mtime: bool = True, drop_other_xattrs: bool = False) -> None:
    """A directory's metadata as a checkout sets it: owner and xattrs (not in user mode), mode (bare-user-only
    masks it to 0775; user mode drops setuid/setgid and keeps the directory writable for its owner) and, on
    directories the checkout made, mtime 0. drop_other_xattrs also removes xattrs meta does not name, for a
    directory that already had some."""
    if not user_mode:
        os.chown(path, meta.uid, meta.gid, follow_symlinks=False)
        if drop_other_xattrs:
            wanted = {name.decode("utf-8", "surrogateescape") for name, _ in meta.xattrs}
            for name in os.listxattr(path, follow_symlinks=False):
                if name not in wanted:
                    os.removexattr(path, name, follow_symlinks=False)
        _apply_xattrs(os.fspath(path), meta.xattrs)
    mode = meta.mode & 0o7777
    if bareuseronly:
        mode &= 0o775
    if user_mode:
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
        mode |= 0o700
    os.chmod(path, mode)
    if reset_mtime:
        os.utime(path, (0, 0), follow_symlinks=False)


def _apply_xattrs(target: str | int, xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
    """Set xattrs on an open descriptor, or on a path without following a symlink there."""
    for name, value in xattrs:
        key = name.decode("utf-8", "surrogateescape")
        if isinstance(target, int):
            os.setxattr(target, key, value)
        else:
            os.setxattr(target, key, value, follow_symlinks=False)
