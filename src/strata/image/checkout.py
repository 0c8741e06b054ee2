"""Checking out a commit (or a subtree of it) into a directory: hardlinks where modes allow, else copies."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.fsutil import apply_xattrs
from strata.image.objects import DirMeta, FileMeta
from strata.image.repo import Repo, RepoMode

_WORKERS = max(2, (os.cpu_count() or 1) * 2)
_LINK_FALLBACK_ERRNOS = (errno.EXDEV, errno.EMLINK, errno.EPERM)
_ANCHOR_AT = 2048  # bytes of path; PATH_MAX is 4096 and a name adds at most 255


@dataclass
class CheckoutOptions:
    user_mode: bool = False  # do not chown, strip setuid/setgid, no xattrs
    union: bool = False  # overwrite files that already exist in the destination
    require_hardlinks: bool = False
    force_copy: bool = False
    subpath: str = ""
    union_add: bool = False  # like union, but files already in the destination are kept (ostree --union-add)


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
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            job.pool = pool
            if kind == "file":
                if dest.exists() and dest.is_dir():
                    dest = dest / Path(opts.subpath).name
                job.futures.append(pool.submit(job.place_file, target[0], str(dest)))
            else:
                job.checkout_tree(target[0], target[1], str(dest))
            for fut in job.futures:
                fut.result()
        job.apply_dir_metadata()
    finally:
        job.close_anchors()


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


class _Checkout:
    def __init__(self, repo: Repo, opts: CheckoutOptions) -> None:
        self.repo = repo
        self.opts = opts
        mode = repo.mode
        self.can_link = not opts.force_copy and (
            (mode is RepoMode.BARE and not opts.user_mode)
            or (mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and opts.user_mode))
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future[None]] = []
        self.dirs_to_finish: list[tuple[str, DirMeta, bool]] = []
        self._dirmeta: dict[str, DirMeta] = {}
        self._anchors: list[int] = []

    def dirmeta(self, checksum: str) -> DirMeta:
        meta = self._dirmeta.get(checksum)
        if meta is None:
            meta = self._dirmeta[checksum] = self.repo.load_dirmeta(checksum)
        return meta

    def checkout_tree(self, tree_csum: str, meta_csum: str, path: str) -> None:
        """Depth first with an explicit stack: a tree may nest deeper than Python's recursion limit."""
        pending = [(tree_csum, meta_csum, path)]
        top = True
        while pending:
            tree_csum, meta_csum, path = pending.pop()
            subdirs = self.checkout_dir(tree_csum, meta_csum, path, top=top)
            pending += reversed([(sub_tree, sub_meta, self._child_path(path, name))
                                 for name, (sub_tree, sub_meta) in subdirs])
            top = False

    def _child_path(self, path: str, name: str) -> str:
        """path/name, kept short enough for the kernel (PATH_MAX): past _ANCHOR_AT bytes the walk
        continues from an O_PATH descriptor of the directory, through /proc/self/fd."""
        if len(path) < _ANCHOR_AT:
            return f"{path}/{name}"
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._anchors.append(fd)
        return f"/proc/self/fd/{fd}/{name}"

    def close_anchors(self) -> None:
        for fd in self._anchors:
            os.close(fd)
        self._anchors.clear()

    def checkout_dir(self, tree_csum: str, meta_csum: str, path: str, *, top: bool = False
                     ) -> list[tuple[str, tuple[str, str]]]:
        """Create one directory with its files; returns its subdirectories for the caller to walk."""
        meta = self.dirmeta(meta_csum)
        created = True
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                raise StrataError(f"cannot check out directory over non-directory {path}") from None
            if not self.opts.union and not (top and not os.listdir(path)):
                raise StrataError(f"destination {path} already exists") from None
            created = False
        except FileNotFoundError:
            raise NotFoundError(f"parent directory of {path} does not exist") from None
        tree = self.repo.load_dirtree(tree_csum)
        assert self.pool is not None
        for name, checksum in tree.files.items():  # names were validated when the dirtree was parsed
            dest = f"{path}/{name}"
            if self.opts.union_add and os.path.lexists(dest):
                continue
            # Links are cheap syscalls, done inline; copies (decompression, hashing) go to the pool.
            if not (self.can_link and self._try_link(checksum, dest)):
                self.futures.append(self.pool.submit(self.copy_file, checksum, dest))
        self.dirs_to_finish.append((path, meta, created))
        return list(tree.dirs.items())

    def apply_dir_metadata(self) -> None:
        # Children first: a parent made read-only must not block writing into it.
        for path, meta, created in reversed(self.dirs_to_finish):
            if not self.opts.user_mode:
                os.chown(path, meta.uid, meta.gid)
                apply_xattrs(path, meta.xattrs)
            mode = meta.mode & 0o7777
            if self.opts.user_mode:
                mode &= ~(stat.S_ISUID | stat.S_ISGID)
                mode |= 0o700
            os.chmod(path, mode)
            if created:
                os.utime(path, (0, 0))

    def place_file(self, checksum: str, dest: str) -> None:
        # Empty files and bare-user symlinks are never linked; a failed link raises with -H.
        if self.can_link and self._try_link(checksum, dest):
            return
        self.copy_file(checksum, dest)

    def copy_file(self, checksum: str, dest: str) -> None:
        meta, content = self.repo.read_file(checksum, verify=True)
        self._write_copy(meta, content, dest)

    def _try_link(self, checksum: str, dest: str) -> bool:
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
            if self.opts.union:
                self._replace(dest, lambda tmp: os.link(src, tmp, follow_symlinks=False))
            else:
                os.link(src, dest, follow_symlinks=False)
        except FileExistsError:
            raise StrataError(f"{dest} already exists") from None
        except OSError as exc:
            if exc.errno in _LINK_FALLBACK_ERRNOS and not self.opts.require_hardlinks:
                return False
            raise
        return True

    def _write_copy(self, meta: FileMeta, content: bytes, dest: str) -> None:
        if meta.is_symlink:
            def make_link(tmp: str) -> None:
                os.symlink(meta.symlink_target, tmp)
                if not self.opts.user_mode:
                    os.lchown(tmp, meta.uid, meta.gid)
                    apply_xattrs(tmp, meta.xattrs)
                os.utime(tmp, (0, 0), follow_symlinks=False)
            self._replace(dest, make_link)
            return
        mode = meta.mode & 0o7777
        if self.opts.user_mode:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)

        def make_file(tmp: str) -> None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                if not self.opts.user_mode:
                    os.fchown(fd, meta.uid, meta.gid)
                    apply_xattrs(tmp, meta.xattrs)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.utime(tmp, (0, 0))
        self._replace(dest, make_file)

    def _replace(self, dest: str, make: object) -> None:
        """Create dest through make(path); with union an existing file is replaced by rename."""
        assert callable(make)
        if not self.opts.union:
            try:
                make(dest)
            except FileExistsError:
                raise StrataError(f"{dest} already exists") from None
            return
        tmp = os.path.join(os.path.dirname(dest), f".strata-co-{secrets.token_hex(6)}")
        make(tmp)
        try:
            if os.path.isdir(dest) and not os.path.islink(dest):
                raise InvalidInputError(f"cannot replace directory {dest} with a file")
            os.rename(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
