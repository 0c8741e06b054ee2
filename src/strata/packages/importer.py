"""Importing an RPM into the package cache: one commit per package, with OSTree's path conventions
(spec E.1-E.4). The payload goes straight from the decompressor into objects; nothing is unpacked on disk."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

from strata.errors import StrataError
from strata.image import objects as O
from strata.image.commit import CommitRequest, MutableTree, write_commit, write_mutable_tree
from strata.image.objects import DirMeta, FileMeta, ObjectType
from strata.image.repo import Repo
from strata.packages.nevra import Nevra
from strata.packages.paths import TMPFILES_SUBDIR, normalize_payload_path, translate_path
from strata.packages.pkgcache import package_ref

__all__ = ["ImportOptions", "PackageFile", "PayloadEntry", "import_package", "normalize_payload_path",
           "translate_path"]

UNPACK_VERSION = 1
UNPACK_MINOR_VERSION = 6


class PayloadEntry(Protocol):
    """One member of an RPM payload as the reader yields it."""

    @property
    def path(self) -> str: ...  # absolute path as in the RPM

    @property
    def mode(self) -> int: ...  # full st_mode

    @property
    def data(self) -> bytes: ...  # file content (regular files)

    @property
    def link_target(self) -> str: ...

    @property
    def user(self) -> str: ...  # owner name from the RPM file list

    @property
    def group(self) -> str: ...


class PackageFile(Protocol):
    """What the importer needs from an opened RPM."""

    @property
    def nevra(self) -> Nevra: ...

    @property
    def header_bytes(self) -> bytes: ...  # lead + signature header + main header

    @property
    def buildtime(self) -> int: ...

    def is_doc(self, path: str) -> bool: ...

    def payload(self) -> Iterator[PayloadEntry]: ...


@dataclass
class ImportOptions:
    repodata_checksum: str | None = None
    repo_id: str | None = None
    repo_timestamp: int | None = None
    nodocs: bool = False


@dataclass
class _Builder:
    repo: Repo
    tree: MutableTree
    dir_meta: dict[int, str] = field(default_factory=dict)
    tmpfiles: list[str] = field(default_factory=list)

    def meta_for(self, mode: int) -> str:
        mode = stat.S_IFDIR | (stat.S_IMODE(mode) | stat.S_IWUSR)
        found = self.dir_meta.get(mode)
        if found is None:
            found = self.dir_meta[mode] = self.repo.write_metadata(
                ObjectType.DIRMETA, DirMeta(0, 0, mode).serialize())
        return found

    def ensure_parents(self, relpath: str) -> MutableTree:
        node = self.tree
        for part in PurePosixPath(relpath).parts[:-1]:
            child = node.dirs.get(part)
            if child is None:
                if part in node.files:
                    raise StrataError(f"{relpath}: parent {part} is not a directory")
                child = node.dirs[part] = MutableTree(self.meta_for(0o755))
            node = child
        return node


def import_package(repo: Repo, pkg: PackageFile, options: ImportOptions | None = None) -> str:
    """Write the package's commit and move its rpmostree/pkg/... ref; returns the commit checksum."""
    opts = options or ImportOptions()
    nevra = pkg.nevra
    try:
        builder = _Builder(repo, MutableTree())
        builder.tree.meta = builder.meta_for(0o755)
        for entry in pkg.payload():
            if opts.nodocs and pkg.is_doc(entry.path):
                continue
            _add_entry(builder, entry)
        if builder.tmpfiles:
            _add_tmpfiles(builder, nevra.name)
        root = write_mutable_tree(repo, builder.tree)
    except StrataError as exc:
        raise StrataError(f"package {nevra.name}: {exc}") from None
    header = pkg.header_bytes
    metadata: list[tuple[str, str, object]] = [
        ("rpmostree.metadata", "ay", header),
        ("rpmostree.metadata_sha256", "s", hashlib.sha256(header).hexdigest()),
        ("rpmostree.nevra", "(sstsss)", (nevra.nevra, nevra.name, nevra.epoch, nevra.version, nevra.release,
                                         nevra.arch)),
        ("rpmostree.unpack_version", "u", UNPACK_VERSION),
        ("rpmostree.unpack_minor_version", "u", UNPACK_MINOR_VERSION),
    ]
    if opts.repo_id is not None:
        repo_info = O.vardict([("id", "s", opts.repo_id), ("timestamp", "t", opts.repo_timestamp or 0)])
        metadata.append(("rpmostree.repo", "a{sv}", repo_info))
    if opts.repodata_checksum:
        metadata.append(("rpmostree.repodata_checksum", "s", opts.repodata_checksum))
    if opts.nodocs:
        metadata.append(("rpmostree.nodocs", "b", True))
    commit = write_commit(repo, root, CommitRequest(timestamp=pkg.buildtime, metadata=metadata))
    repo.set_ref(package_ref(nevra.name, nevra.epoch, nevra.version, nevra.release, nevra.arch), commit)
    return commit


def _add_entry(builder: _Builder, entry: PayloadEntry) -> None:
    owner = f"{entry.user or 'root'} {entry.group or 'root'}"
    translated = translate_path(entry.path, entry.mode, entry.link_target, owner)
    if translated.tmpfiles:
        builder.tmpfiles.append(translated.tmpfiles)
    rel = translated.stored
    if rel is None:
        return
    if stat.S_ISDIR(entry.mode):
        parent = builder.ensure_parents(rel)
        name = PurePosixPath(rel).name
        existing = parent.dirs.get(name)
        if existing is None:
            parent.dirs[name] = MutableTree(builder.meta_for(entry.mode))
        else:
            existing.meta = builder.meta_for(entry.mode)
        return
    if stat.S_ISLNK(entry.mode):
        meta = FileMeta(0, 0, stat.S_IFLNK | 0o777, entry.link_target)
        checksum = builder.repo.write_content(meta)
    elif stat.S_ISREG(entry.mode):
        checksum = builder.repo.write_content(FileMeta(0, 0, entry.mode), entry.data)
    else:
        raise StrataError(f"{entry.path}: device nodes and fifos cannot be imported")
    parent = builder.ensure_parents(rel)
    name = PurePosixPath(rel).name
    if name in parent.dirs:
        raise StrataError(f"{entry.path} is both a directory and a file in the payload")
    parent.files[name] = checksum


def _add_tmpfiles(builder: _Builder, name: str) -> None:
    content = "".join(line + "\n" for line in dict.fromkeys(builder.tmpfiles)).encode()
    checksum = builder.repo.write_content(FileMeta(0, 0, stat.S_IFREG | 0o644), content)
    parent = builder.ensure_parents(f"{TMPFILES_SUBDIR}/{name}.conf")
    parent.files[f"{name}.conf"] = checksum
