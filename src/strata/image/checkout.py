"""Checking out a commit (or a subtree of it) into a directory: hardlinks where modes allow, else copies.

The walk is link()/mkdir()-bound, so it works relative to directory descriptors (one per object prefix
directory of the repository, one per destination directory being filled) instead of resolving full paths,
and it fills several directories at once on a few threads: the interpreter lock is released in every
system call, so the kernel work (and, with cold caches, the disk reads) of two directories overlap."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.objects import DirMeta, FileMeta, ostreemeta_mode
from strata.image.repo import OSTREEMETA_XATTR, Repo, RepoMode

_WORKERS = max(2, (os.cpu_count() or 1) * 2)
_LINK_FALLBACK_ERRNOS = (errno.EXDEV, errno.EMLINK, errno.EPERM)
_ANCHOR_AT = 2048  # bytes of path; PATH_MAX is 4096 and a name adds at most 255
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class CheckoutOptions:
    user_mode: bool = False  # do not chown, strip setuid/setgid, no xattrs
    union: bool = False  # overwrite files that already exist in the destination
    require_hardlinks: bool = False
    force_copy: bool = False
    subpath: str = ""
    union_add: bool = False  # like union, but files already in the destination are kept (ostree --union-add)
    files_done: Callable[[int], None] | None = None  # each directory's file count once placed (progress; any thread)


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
            _walk_parallel((target[0], target[1], path, created), job.checkout_dir, _WORKERS)
            job.apply_dir_metadata()
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


_Item = tuple[str, str, str, bool]  # (dirtree, dirmeta, path of the existing destination, whether we made it)


def _walk_parallel(first: _Item, visit: Callable[[_Item], list[_Item]], workers: int) -> None:
    """visit(first), then visit every item a visit returns, on `workers` threads (depth first, so few items
    wait); the first error stops the walk and is raised here."""
    pending = [first]
    busy = 0
    failure: list[BaseException] = []
    cond = threading.Condition()

    def work() -> None:
        nonlocal busy
        while True:
            with cond:
                while not pending and busy and not failure:
                    cond.wait()
                if failure or not pending:
                    cond.notify_all()
                    return
                item = pending.pop()
                busy += 1
            try:
                found = visit(item)
            except BaseException as exc:
                with cond:
                    failure.append(exc)
                    busy -= 1
                    cond.notify_all()
                return
            with cond:
                found.reverse()  # popped from the end: the first subdirectory next
                pending.extend(found)
                busy -= 1
                cond.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers - 1)]
    for thread in threads:
        thread.start()
    work()
    for thread in threads:
        thread.join()
    if failure:
        raise failure[0]


class _Checkout:
    def __init__(self, repo: Repo, opts: CheckoutOptions) -> None:
        self.repo = repo
        self.opts = opts
        mode = repo.mode
        self.can_link = not opts.force_copy and (
            (mode is RepoMode.BARE and not opts.user_mode)
            or (mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and opts.user_mode))
        self.dirs_to_finish: list[tuple[str, DirMeta, bool]] = []
        self._dirmeta: dict[str, DirMeta] = {}
        self._anchors: list[int] = []
        self._anchor_lock = threading.Lock()
        self._objects = str(repo.path / "objects")
        self._ext = ".filez" if repo.is_archive else ".file"
        self._prefix_fds: dict[str, int] = self._open_prefixes() if self.can_link else {}

    def _open_prefixes(self) -> dict[str, int]:
        """A descriptor for each objects/XX directory: links then resolve one name, not a long path."""
        fds: dict[str, int] = {}
        objects_fd = os.open(self._objects, _DIR_FLAGS)
        try:
            for prefix in os.listdir(self._objects):
                if len(prefix) == 2:
                    with contextlib.suppress(OSError):
                        fds[prefix] = os.open(prefix, _DIR_FLAGS, dir_fd=objects_fd)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        finally:
            os.close(objects_fd)
        return fds

    def close(self) -> None:
        for fd in [*self._anchors, *self._prefix_fds.values()]:
            os.close(fd)
        self._anchors.clear()
        self._prefix_fds.clear()

    def dirmeta(self, checksum: str) -> DirMeta:
        meta = self._dirmeta.get(checksum)
        if meta is None:
            meta = self._dirmeta[checksum] = self.repo.load_dirmeta(checksum)
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

    def checkout_dir(self, item: _Item) -> list[_Item]:
        """Fill one existing directory: its files, and its subdirectories created empty; returns those for
        the walk to fill."""
        tree_csum, meta_csum, path, created = item
        meta = self.dirmeta(meta_csum)
        tree = self.repo.load_dirtree(tree_csum)  # names were validated when the dirtree was parsed
        dir_fd = os.open(path, _DIR_FLAGS)
        try:
            self.dirs_to_finish.append((path, meta, created))
            if self.can_link and not (self.opts.union or self.opts.union_add):
                for name, checksum in self._link_files(dir_fd, path, tree.files):
                    self.copy_file(checksum, dir_fd, name, path)  # known not to be linkable: no second try
            else:
                for name, checksum in tree.files.items():
                    self.place_file(checksum, dir_fd, name, path)
            if self.opts.files_done is not None:
                self.opts.files_done(len(tree.files))
            children: list[_Item] = []
            for name, (sub_tree, sub_meta) in tree.dirs.items():
                sub_created = self._make_subdir(dir_fd, name, path)
                children.append((sub_tree, sub_meta, self._child_path(path, name), sub_created))
        finally:
            os.close(dir_fd)
        return children

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
        with self._anchor_lock:
            self._anchors.append(fd)
        return f"/proc/self/fd/{fd}/{name}"

    def apply_dir_metadata(self) -> None:
        # Children first: a parent made read-only must not block writing into it. A directory was listed
        # before its subdirectories, whichever thread filled it.
        for path, meta, created in reversed(self.dirs_to_finish):
            if not self.opts.user_mode:
                os.chown(path, meta.uid, meta.gid)
                _apply_xattrs(path, meta.xattrs)
            mode = meta.mode & 0o7777
            if self.opts.user_mode:
                mode &= ~(stat.S_ISUID | stat.S_ISGID)
                mode |= 0o700
            os.chmod(path, mode)
            if created:
                os.utime(path, (0, 0))

    # ------------------------------------------------------------ files

    def _link_files(self, dir_fd: int, path: str, files: dict[str, str]) -> list[tuple[str, str]]:
        """Hardlink every file of a directory that can be; returns the (name, checksum) left to copy. The hot
        loop of a checkout: two or three system calls per file, relative to open directories."""
        prefix_fds = self._prefix_fds
        ext = self._ext
        bare_user = self.repo.mode is RepoMode.BARE_USER
        require = self.opts.require_hardlinks
        copies: list[tuple[str, str]] = []
        for name, checksum in files.items():
            prefix = checksum[:2]
            rest = checksum[2:] + ext
            try:
                st = os.stat(rest, dir_fd=prefix_fds[prefix], follow_symlinks=False)
            except (KeyError, FileNotFoundError):
                raise NotFoundError(f"file object {checksum} not found") from None
            # Empty files are copied (ostree: no EMLINK), bare-user symlinks are regular files in the store.
            if (st.st_size == 0 and stat.S_ISREG(st.st_mode)) or (
                    bare_user and self._bare_user_symlink(checksum, f"{self._objects}/{prefix}/{rest}")):
                copies.append((name, checksum))
                continue
            try:
                os.link(rest, name, src_dir_fd=prefix_fds[prefix], dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise StrataError(f"{path}/{name} already exists") from None
            except OSError as exc:
                if exc.errno in _LINK_FALLBACK_ERRNOS and not require:
                    copies.append((name, checksum))
                    continue
                raise
        return copies

    @staticmethod
    def _bare_user_symlink(checksum: str, path: str) -> bool:
        try:
            value = os.getxattr(path, OSTREEMETA_XATTR, follow_symlinks=False)
        except OSError:
            raise StrataError(f"file object {checksum} has no {OSTREEMETA_XATTR}") from None
        return stat.S_ISLNK(ostreemeta_mode(value))

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
        self.copy_file(checksum, dir_fd, name, path)

    def copy_file(self, checksum: str, dir_fd: int, name: str, path: str) -> None:
        meta, content = self.repo.read_file(checksum, verify=True)
        self._write_copy(meta, content, dir_fd, name, path)

    def _try_link(self, checksum: str, dir_fd: int, name: str, path: str) -> bool:
        src = self.repo.file_object_path(checksum)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            raise NotFoundError(f"file object {checksum} not found") from None
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
        if user_mode:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)

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


def _apply_xattrs(target: str | int, xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
    """Set xattrs on an open descriptor, or on a path without following a symlink there."""
    for name, value in xattrs:
        key = name.decode("utf-8", "surrogateescape")
        if isinstance(target, int):
            os.setxattr(target, key, value)
        else:
            os.setxattr(target, key, value, follow_symlinks=False)
