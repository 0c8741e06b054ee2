"""Writing trees and commits into a repository."""

from __future__ import annotations

import os
import re
import secrets
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
_ADOPT_MAX = 16 << 20
_BATCH = 128  # files per job handed to the writer threads: one future per batch, not per file


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
    """Write the dirtree objects of tree bottom-up; returns (root dirtree, root dirmeta). Walked with a list,
    not recursion: a tree from elsewhere may nest deeper than Python's recursion limit."""
    order = [tree]  # every node before its descendants
    for node in order:
        order.extend(node.dirs.values())
    written: dict[int, tuple[str, str]] = {}
    for node in reversed(order):
        if not node.meta:
            raise StrataError("directory without dirmeta in tree")
        dirtree = DirTree(dict(node.files), {name: written[id(child)] for name, child in node.dirs.items()})
        written[id(node)] = repo.write_metadata(ObjectType.DIRTREE, dirtree.serialize()), node.meta
    return written[id(tree)]


def load_mutable_tree(repo: Repo, dirtree: str, dirmeta: str) -> MutableTree:
    """Read a committed tree back into a MutableTree (for editing and recommitting), without recursion."""
    root = MutableTree(dirmeta)
    pending = [(root, dirtree)]
    while pending:
        node, checksum = pending.pop()
        loaded = repo.load_dirtree(checksum)
        node.files = dict(loaded.files)
        for name, (sub_tree, sub_meta) in loaded.dirs.items():
            node.dirs[name] = MutableTree(sub_meta)
            pending.append((node.dirs[name], sub_tree))
    return root


@dataclass
class TreeWriteOptions:
    owner_uid: int | None = None
    owner_gid: int | None = None
    skip_xattrs: bool = False
    progress: Progress | None = None
    canonical_permissions: bool = False  # uid/gid 0 and modes masked to 0755, as bare-user-only stores them
    mode_ro_executables: bool = False  # executable regular files lose their write bits
    mode_adds: dict[str, int] = field(default_factory=dict)  # "/path" -> bits ORed in (statoverride "+N")
    mode_overrides: dict[str, int] = field(default_factory=dict)  # "/path" -> permission bits ("=N")
    skip_paths: set[str] = field(default_factory=set)  # "/path" not stored (skip-list)
    consume: bool = False  # delete each file and directory of the source once it is stored
    # ostree's -I/--devino-canonical: a file hardlinked to an object is that object as it is, even when
    # owner overrides or --no-xattrs would describe it differently
    devino_canonical: bool = False

    @property
    def filters(self) -> bool:
        return bool(self.canonical_permissions or self.mode_ro_executables or self.mode_adds
                    or self.mode_overrides or self.skip_paths)

    def unmatched(self) -> list[str]:
        """Statoverride and skip-list paths that matched nothing (consumed entries are removed)."""
        return sorted({*self.mode_adds, *self.mode_overrides, *self.skip_paths})


class _DirScan:
    def __init__(self, meta: str, path: str) -> None:
        self.meta = meta
        self.path = path
        self.files: dict[str, str] = {}
        self.batches: list[Future[list[tuple[str, str]]]] = []  # (name, checksum) of files being written
        self.dirs: dict[str, _DirScan] = {}
        self.subdirs: list[tuple[str, os.stat_result, str, str]] = []  # (path, stat, relpath, name) to scan
        self.written: tuple[str, str] = ("", "")

    def collect(self) -> None:
        """Wait for the writers of this directory's files and record their checksums."""
        for batch in self.batches:
            self.files.update(batch.result())
        self.batches.clear()


def write_tree_from_dir(repo: Repo, root: Path, options: TreeWriteOptions | None = None) -> tuple[str, str]:
    """Store every file below root and the directory structure; returns (dirtree, dirmeta)."""
    opts = options or TreeWriteOptions()
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"{root} is not a directory")
    writer = _TreeWriter(repo, opts)
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        writer.pool = pool
        scans = writer.scan_tree(str(root), st)
    return writer.finish(scans)


def _check_utf8(name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise InvalidInputError(f"Invalid UTF-8 in filename {shown}") from None


class _TreeWriter:
    def __init__(self, repo: Repo, opts: TreeWriteOptions) -> None:
        self.repo = repo
        self.opts = opts
        self.pool: ThreadPoolExecutor | None = None
        self.count = 0
        self.use_xattrs = not opts.skip_xattrs and repo.mode is not RepoMode.BARE_USER_ONLY
        # ostree commits into bare-user-only with canonical permissions whether asked or not
        self.canonical = opts.canonical_permissions or repo.mode is RepoMode.BARE_USER_ONLY
        self.devino_ok = not opts.filters and (opts.devino_canonical or (
            opts.owner_uid is None and opts.owner_gid is None and not opts.skip_xattrs))
        self._dirmeta_cache: dict[bytes, str] = {}
        try:
            tmp = os.stat(repo.path / "tmp")
            self._repo_tmp = (tmp.st_dev, tmp.st_ino)
        except OSError:
            self._repo_tmp = (-1, -1)

    def _owner(self, st: os.stat_result) -> tuple[int, int]:
        if self.canonical:
            return 0, 0
        uid = st.st_uid if self.opts.owner_uid is None else self.opts.owner_uid
        gid = st.st_gid if self.opts.owner_gid is None else self.opts.owner_gid
        return uid, gid

    def _mode(self, relpath: str, mode: int) -> int:
        """The mode stored for relpath after ostree's commit filter (statoverride, canonical, ro-executables)."""
        opts = self.opts
        if stat.S_ISREG(mode) and opts.mode_ro_executables and mode & 0o111:
            mode &= ~0o222
        if relpath in opts.mode_adds:
            mode |= opts.mode_adds.pop(relpath)
        elif relpath in opts.mode_overrides:
            mode = stat.S_IFMT(mode) | opts.mode_overrides.pop(relpath)
        if self.canonical and not stat.S_ISLNK(mode):
            mode &= stat.S_IFMT(mode) | 0o755
        return mode

    def _skipped(self, relpath: str) -> bool:
        if relpath in self.opts.skip_paths:
            self.opts.skip_paths.discard(relpath)
            return True
        return False

    def _consume(self, path: str, *, directory: bool = False) -> None:
        if self.opts.consume:
            if directory:
                os.rmdir(path)
            else:
                os.unlink(path)

    def _xattrs(self, path: str) -> tuple[tuple[bytes, bytes], ...]:
        return tuple(read_xattrs(path)) if self.use_xattrs else ()

    def scan_tree(self, path: str, st: os.stat_result) -> list[_DirScan]:
        """Every directory below path, each before its descendants (a list, not recursion: no depth limit)."""
        order = [self.scan_dir(path, st, "/")]
        for scan in order:
            for sub_path, sub_st, relpath, name in scan.subdirs:
                scan.dirs[name] = self.scan_dir(sub_path, sub_st, relpath)
                order.append(scan.dirs[name])
        if self.opts.consume:  # descendants first; a directory is empty once its files' writers are done
            for scan in reversed(order[1:]):
                scan.collect()
                self._consume(scan.path, directory=True)
        return order

    def scan_dir(self, path: str, st: os.stat_result, relpath: str = "/") -> _DirScan:
        uid, gid = self._owner(st)
        mode = self._mode(relpath, st.st_mode)
        meta = self.repo.canonical_dirmeta(DirMeta(uid, gid, mode, self._xattrs(path)))
        data = meta.serialize()
        meta_csum = self._dirmeta_cache.get(data)
        if meta_csum is None:
            meta_csum = self._dirmeta_cache[data] = self.repo.write_metadata(ObjectType.DIRMETA, data)
        scan = _DirScan(meta_csum, path)
        if (st.st_dev, st.st_ino) == self._repo_tmp:
            return scan  # the repository's own staging area, when it lies inside the committed tree
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        assert self.pool is not None
        batch: list[tuple[str, str, os.stat_result, int]] = []
        for entry in entries:
            name = entry.name
            _check_utf8(name)
            O.validate_name(name)
            child = f"{relpath.rstrip('/')}/{name}"
            if self._skipped(child):
                continue
            try:
                est = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while we scan (e.g. a temporary file of this very repo)
                continue
            if stat.S_ISDIR(est.st_mode):
                scan.subdirs.append((entry.path, est, child, name))
            elif stat.S_ISREG(est.st_mode) or stat.S_ISLNK(est.st_mode):
                known = self.repo.devino_lookup(est) if self.devino_ok else None
                if known is not None:  # a hardlink to an object: nothing to read (inline, no future)
                    scan.files[name] = known
                    self._consume(entry.path)
                    self._tick()
                else:
                    batch.append((name, entry.path, est, self._mode(child, est.st_mode)))
                    if len(batch) == _BATCH:
                        scan.batches.append(self.pool.submit(self._write_files, batch))
                        batch = []
            else:
                raise InvalidInputError(f"{entry.path}: cannot store special file (device, fifo or socket)")
        if batch:
            scan.batches.append(self.pool.submit(self._write_files, batch))
        return scan

    def _write_files(self, batch: list[tuple[str, str, os.stat_result, int]]) -> list[tuple[str, str]]:
        return [(name, self._write_file(path, st, mode)) for name, path, st, mode in batch]

    def _write_file(self, path: str, st: os.stat_result, mode: int) -> str:
        uid, gid = self._owner(st)
        xattrs = self._xattrs(path)
        if stat.S_ISLNK(st.st_mode):
            meta = FileMeta(uid, gid, mode, os.readlink(path), xattrs)
            checksum = self.repo.write_content(meta)
        else:
            meta = FileMeta(uid, gid, mode, "", xattrs)
            adopted = self._adopt(path, st, meta) if self.opts.consume else None
            checksum = adopted or self.repo.write_content_from_file(meta, path, st.st_size)
        self._consume(path)
        self._tick()
        return checksum

    def _adopt(self, path: str, st: os.stat_result, meta: FileMeta) -> str | None:
        """With --consume, link a file whose own metadata is what bare and bare-user-only store straight into
        the object store instead of copying it (ostree's "adopt")."""
        repo = self.repo
        if repo.mode not in (RepoMode.BARE, RepoMode.BARE_USER_ONLY) or st.st_size > _ADOPT_MAX or meta.xattrs:
            return None
        stored = repo.canonical_meta(meta)
        if (stored.mode, stored.uid, stored.gid) != (st.st_mode, st.st_uid, st.st_gid) and repo.mode is RepoMode.BARE:
            return None
        if stored.mode != st.st_mode:
            return None
        with open(path, "rb") as f:
            checksum = O.content_checksum(stored, f.read())
        if not repo.has_object(checksum, ObjectType.FILE):
            target = repo.object_path(checksum, ObjectType.FILE)
            target.parent.mkdir(exist_ok=True)
            try:
                os.link(path, target)
            except FileExistsError:
                pass
            except OSError:
                return None
        return checksum

    def _tick(self) -> None:
        self.count += 1
        if self.opts.progress and self.count % 500 == 0:
            self.opts.progress("files", self.count)

    def finish(self, scans: list[_DirScan]) -> tuple[str, str]:
        """Write the dirtrees of scan_tree's directories, descendants first; returns the top one."""
        for scan in reversed(scans):
            scan.collect()
            tree = DirTree(scan.files, {name: sub.written for name, sub in scan.dirs.items()})
            scan.written = self.repo.write_metadata(ObjectType.DIRTREE, tree.serialize()), scan.meta
        return scans[0].written


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
    _injected_fault_before_commit(repo)
    timestamp = request.timestamp if request.timestamp is not None else default_timestamp()
    commit = Commit(O.vardict(metadata), request.parent, request.subject, request.body, timestamp,
                    root[0], root[1])
    return repo.write_metadata(ObjectType.COMMIT, commit.serialize())


def _injected_fault_before_commit(repo: Repo) -> None:
    """ostree's fault injection for its test suite (OSTREE_REPO_TEST_ERROR=pre-commit): the commit stops before
    its commit object is written, leaving a staging directory named after the boot as ostree's transaction
    leaves one (strata has already published the tree's objects, each as it was written)."""
    if "pre-commit" not in os.environ.get("OSTREE_REPO_TEST_ERROR", "").split(","):
        return
    boot_id = os.environ.get("OSTREE_BOOTID") or Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (repo.path / "tmp" / f"staging-{boot_id}-{secrets.token_hex(3)}").mkdir(parents=True)
    raise StrataError("OSTREE_REPO_TEST_ERROR_PRE_COMMIT specified")


def default_timestamp() -> int:
    """Now, or $SOURCE_DATE_EPOCH (leading digits, as strtoll reads it; none at all is an error)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return int(time.time())
    match = re.match(r"\s*[-+]?\d+", epoch)
    if match is None:
        raise InvalidInputError("Failed to convert SOURCE_DATE_EPOCH")
    value = int(match.group())
    if not -(1 << 63) <= value < (1 << 63):
        raise InvalidInputError("Parsing SOURCE_DATE_EPOCH: Numerical result out of range")
    return value


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


def overlay_tree(base: MutableTree, top: MutableTree) -> None:
    """Lay top over base as ostree layers several --tree sources: top's entries win, directories merge."""
    base.meta = top.meta
    for name, checksum in top.files.items():
        base.dirs.pop(name, None)
        base.files[name] = checksum
    for name, sub in top.dirs.items():
        base.files.pop(name, None)
        if name in base.dirs:
            overlay_tree(base.dirs[name], sub)
        else:
            base.dirs[name] = sub


def commit_root(repo: Repo, rev: str) -> tuple[str, str]:
    """(dirtree, dirmeta) of the commit a rev names."""
    checksum = repo.resolve_rev(rev)
    assert checksum is not None
    loaded = repo.load_commit(checksum)
    return loaded.root_tree, loaded.root_meta


def layer_roots(repo: Repo, roots: list[tuple[str, str]], base: tuple[str, str] | None = None) -> tuple[str, str]:
    """One root from several, later ones laid over earlier ones (a single root is returned as it is)."""
    if base is None and len(roots) == 1:
        return roots[0]
    tree = load_mutable_tree(repo, *base) if base else MutableTree()
    for root in roots:
        overlay_tree(tree, load_mutable_tree(repo, *root))
    return write_mutable_tree(repo, tree)


def content_objects(repo: Repo, root: tuple[str, str]) -> set[str]:
    found: set[str] = set()
    stack = [root[0]]
    while stack:
        tree = repo.load_dirtree(stack.pop())
        found.update(tree.files.values())
        stack.extend(pair[0] for pair in tree.dirs.values())
    return found


def tree_unchanged(repo: Repo, root: tuple[str, str], parent: str | None) -> bool:
    """--skip-if-unchanged: the new root equals the parent commit's."""
    if parent is None:
        return False
    loaded = repo.load_commit(parent)
    return (loaded.root_tree, loaded.root_meta) == root


def modifies_metadata(options: TreeWriteOptions) -> bool:
    return options.owner_uid is not None or options.owner_gid is not None or options.skip_xattrs or options.filters


def rewrite_tree(repo: Repo, root: tuple[str, str], options: TreeWriteOptions) -> tuple[str, str]:
    """A stored tree again with options' owner, mode and skip filters applied (commit --tree=ref= with
    --owner-uid, --statoverride and the like)."""
    writer = _TreeWriter(repo, options)
    return _rewrite_dir(writer, root, "/")


def _rewrite_dir(writer: _TreeWriter, pair: tuple[str, str], relpath: str) -> tuple[str, str]:
    repo = writer.repo
    meta = repo.load_dirmeta(pair[1])
    st = os.stat_result((meta.mode, 0, 0, 0, meta.uid, meta.gid, 0, 0, 0, 0))
    uid, gid = writer._owner(st)
    new_meta = repo.canonical_dirmeta(DirMeta(uid, gid, writer._mode(relpath, meta.mode),
                                              () if writer.opts.skip_xattrs else meta.xattrs))
    tree = repo.load_dirtree(pair[0])
    result = DirTree()
    for name, checksum in tree.files.items():
        child = f"{relpath.rstrip('/')}/{name}"
        if not writer._skipped(child):
            result.files[name] = _rewrite_file(writer, checksum, child)
    for name, sub in tree.dirs.items():
        child = f"{relpath.rstrip('/')}/{name}"
        if not writer._skipped(child):
            result.dirs[name] = _rewrite_dir(writer, sub, child)
    return (repo.write_metadata(ObjectType.DIRTREE, result.serialize()),
            repo.write_metadata(ObjectType.DIRMETA, new_meta.serialize()))


def _rewrite_file(writer: _TreeWriter, checksum: str, relpath: str) -> str:
    meta, content = writer.repo.read_file(checksum, verify=False)
    st = os.stat_result((meta.mode, 0, 0, 0, meta.uid, meta.gid, 0, 0, 0, 0))
    uid, gid = writer._owner(st)
    new_meta = FileMeta(uid, gid, writer._mode(relpath, meta.mode), meta.symlink_target,
                        () if writer.opts.skip_xattrs else meta.xattrs)
    return writer.repo.write_content(new_meta, content)
