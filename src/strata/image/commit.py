"""Writing trees and commits into a repository."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image import objects as O
from strata.image.fsutil import read_xattrs
from strata.image.objects import Commit, DirMeta, DirTree, FileMeta, ObjectType
from strata.image.repo import Repo, RepoMode

Progress = Callable[[str, int], None]  # (what, count so far)
_WORKERS = max(2, (os.cpu_count() or 1) * 2)


@dataclass
class MutableTree:
    """A directory being built in memory: files by content checksum, subdirectories, its dirmeta."""

    meta: str = ""  # dirmeta checksum
    files: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, MutableTree] = field(default_factory=dict)

    def ensure_dir(self, relpath: str, meta: str) -> MutableTree:
        node = self
        for part in _split(relpath):
            child = node.dirs.get(part)
            if child is None:
                if part in node.files:
                    raise InvalidInputError(f"{relpath}: {part} is a file, not a directory")
                child = node.dirs[part] = MutableTree(meta)
            node = child
        return node

    def lookup_dir(self, relpath: str) -> MutableTree | None:
        node: MutableTree | None = self
        for part in _split(relpath):
            node = node.dirs.get(part) if node else None
        return node

    def add_file(self, relpath: str, checksum: str) -> None:
        parts = _split(relpath)
        if not parts:
            raise InvalidInputError("cannot add a file at the root path")
        parent = self.lookup_dir("/".join(parts[:-1]))
        if parent is None:
            raise InvalidInputError(f"parent directory of {relpath} does not exist")
        if parts[-1] in parent.dirs:
            raise InvalidInputError(f"{relpath} is a directory")
        parent.files[parts[-1]] = checksum

    def remove(self, relpath: str) -> bool:
        parts = _split(relpath)
        parent = self.lookup_dir("/".join(parts[:-1]))
        if parent is None or not parts:
            return False
        name = parts[-1]
        return parent.files.pop(name, None) is not None or parent.dirs.pop(name, None) is not None


def _split(relpath: str) -> list[str]:
    parts = [p for p in relpath.strip("/").split("/") if p]
    for part in parts:
        O.validate_name(part)
    return parts


def write_mutable_tree(repo: Repo, tree: MutableTree) -> tuple[str, str]:
    """Write the dirtree objects of tree bottom-up; returns (root dirtree, root dirmeta)."""
    dirtree = DirTree(files=dict(tree.files))
    for name, child in tree.dirs.items():
        dirtree.dirs[name] = write_mutable_tree(repo, child)
    if not tree.meta:
        raise StrataError("directory without dirmeta in tree")
    return repo.write_metadata(ObjectType.DIRTREE, dirtree.serialize()), tree.meta


def load_mutable_tree(repo: Repo, dirtree: str, dirmeta: str) -> MutableTree:
    """Read a committed tree back into a MutableTree (for editing and recommitting)."""
    loaded = repo.load_dirtree(dirtree)
    node = MutableTree(dirmeta, dict(loaded.files))
    for name, (sub_tree, sub_meta) in loaded.dirs.items():
        node.dirs[name] = load_mutable_tree(repo, sub_tree, sub_meta)
    return node


@dataclass
class TreeWriteOptions:
    owner_uid: int | None = None
    owner_gid: int | None = None
    skip_xattrs: bool = False
    progress: Progress | None = None


class _DirScan:
    def __init__(self, meta: str) -> None:
        self.meta = meta
        self.files: dict[str, str | Future[str]] = {}
        self.dirs: dict[str, _DirScan] = {}


def write_tree_from_dir(repo: Repo, root: Path, options: TreeWriteOptions | None = None) -> tuple[str, str]:
    """Store every file below root and the directory structure; returns (dirtree, dirmeta)."""
    opts = options or TreeWriteOptions()
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"{root} is not a directory")
    writer = _TreeWriter(repo, opts)
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        writer.pool = pool
        scan = writer.scan_dir(str(root), st)
    return writer.finish(scan)


class _TreeWriter:
    def __init__(self, repo: Repo, opts: TreeWriteOptions) -> None:
        self.repo = repo
        self.opts = opts
        self.pool: ThreadPoolExecutor | None = None
        self.count = 0
        self.use_xattrs = not opts.skip_xattrs and repo.mode is not RepoMode.BARE_USER_ONLY
        self.devino_ok = opts.owner_uid is None and opts.owner_gid is None and not opts.skip_xattrs
        self._dirmeta_cache: dict[bytes, str] = {}

    def _owner(self, st: os.stat_result) -> tuple[int, int]:
        uid = st.st_uid if self.opts.owner_uid is None else self.opts.owner_uid
        gid = st.st_gid if self.opts.owner_gid is None else self.opts.owner_gid
        return uid, gid

    def _xattrs(self, path: str) -> tuple[tuple[bytes, bytes], ...]:
        return tuple(read_xattrs(path)) if self.use_xattrs else ()

    def scan_dir(self, path: str, st: os.stat_result) -> _DirScan:
        uid, gid = self._owner(st)
        meta = self.repo.canonical_dirmeta(DirMeta(uid, gid, st.st_mode, self._xattrs(path)))
        data = meta.serialize()
        meta_csum = self._dirmeta_cache.get(data)
        if meta_csum is None:
            meta_csum = self._dirmeta_cache[data] = self.repo.write_metadata(ObjectType.DIRMETA, data)
        scan = _DirScan(meta_csum)
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        assert self.pool is not None
        for entry in entries:
            name = entry.name
            O.validate_name(name)
            est = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                scan.dirs[name] = self.scan_dir(entry.path, est)
            elif stat.S_ISREG(est.st_mode) or stat.S_ISLNK(est.st_mode):
                known = self.repo.devino_lookup(est) if self.devino_ok else None
                if known is not None:  # a hardlink to an object: nothing to read (inline, no future)
                    scan.files[name] = known
                    self._tick()
                else:
                    scan.files[name] = self.pool.submit(self._write_file, entry.path, est)
            else:
                raise InvalidInputError(f"{entry.path}: cannot store special file (device, fifo or socket)")
        return scan

    def _write_file(self, path: str, st: os.stat_result) -> str:
        uid, gid = self._owner(st)
        xattrs = self._xattrs(path)
        if stat.S_ISLNK(st.st_mode):
            meta = FileMeta(uid, gid, st.st_mode, os.readlink(path), xattrs)
            checksum = self.repo.write_content(meta)
        else:
            meta = FileMeta(uid, gid, st.st_mode, "", xattrs)
            checksum = self.repo.write_content_from_file(meta, path, st.st_size)
        self._tick()
        return checksum

    def _tick(self) -> None:
        self.count += 1
        if self.opts.progress and self.count % 500 == 0:
            self.opts.progress("files", self.count)

    def finish(self, scan: _DirScan) -> tuple[str, str]:
        tree = DirTree({name: value if isinstance(value, str) else value.result()
                        for name, value in scan.files.items()})
        for name, sub in scan.dirs.items():
            tree.dirs[name] = self.finish(sub)
        return self.repo.write_metadata(ObjectType.DIRTREE, tree.serialize()), scan.meta


@dataclass
class CommitRequest:
    subject: str = ""
    body: str = ""
    timestamp: int | None = None
    metadata: list[tuple[str, str, Any]] = field(default_factory=list)  # (key, gvariant type, value)
    parent: str | None = None
    bind_refs: list[str] = field(default_factory=list)


def write_commit(repo: Repo, root: tuple[str, str], request: CommitRequest) -> str:
    """Write the commit object for a tree that is already in the repository."""
    metadata = list(request.metadata)
    keys = {key for key, _, _ in metadata}
    if request.bind_refs and "ostree.ref-binding" not in keys:
        metadata.append(("ostree.ref-binding", "as", sorted(set(request.bind_refs))))
    collection = repo.config.get("core", "collection-id")
    if collection and "ostree.collection-binding" not in keys:
        metadata.append(("ostree.collection-binding", "s", collection))
    if request.parent is not None and not repo.has_object(request.parent, ObjectType.COMMIT):
        raise NotFoundError(f"parent commit {request.parent} not found")
    timestamp = request.timestamp if request.timestamp is not None else default_timestamp()
    commit = Commit(O.vardict(metadata), request.parent, request.subject, request.body, timestamp,
                    root[0], root[1])
    return repo.write_metadata(ObjectType.COMMIT, commit.serialize())


def default_timestamp() -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return int(epoch) if epoch and epoch.isdigit() else int(time.time())


def commit_directory(repo: Repo, source: Path, branch: str | None, request: CommitRequest,
                     tree_options: TreeWriteOptions | None = None) -> str:
    """Commit a directory and move branch to it (objects first, then sync, then the ref)."""
    with repo.lock():
        root = write_tree_from_dir(repo, source, tree_options)
        checksum = write_commit(repo, root, request)
        repo.sync()
        if branch:
            repo.set_ref(branch, checksum)
    return checksum
