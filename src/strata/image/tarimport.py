"""Importing a tar archive as a tree (`ostree commit --tree=tar=FILE`)."""

from __future__ import annotations

import stat
import sys
import tarfile
from typing import IO

from strata.errors import InvalidInputError
from strata.image.commit import MutableTree, TreeWriteOptions, write_mutable_tree
from strata.image.objects import DirMeta, FileMeta, ObjectType
from strata.image.repo import Repo

_DEFAULT_DIR_MODE = stat.S_IFDIR | 0o755


def import_tar(repo: Repo, path: str, options: TreeWriteOptions | None = None, *,
               autocreate_parents: bool = False) -> tuple[str, str]:
    """Store every member of the archive at path ('-' is stdin); returns the root (dirtree, dirmeta)."""
    opts = options or TreeWriteOptions()
    stream: IO[bytes] | None = sys.stdin.buffer if path == "-" else None
    with tarfile.open(name=None if stream else path, fileobj=stream, mode="r|*") as archive:
        return _import(repo, archive, opts, autocreate_parents)


def _import(repo: Repo, archive: tarfile.TarFile, opts: TreeWriteOptions, autocreate: bool) -> tuple[str, str]:
    default_meta = _dirmeta(repo, _DEFAULT_DIR_MODE, 0, 0, opts)
    tree = MutableTree(default_meta)
    links: list[tuple[str, str]] = []
    for member in archive:
        name = _clean(member.name)
        if not name:
            if member.isdir():
                tree.meta = _dirmeta(repo, stat.S_IFDIR | member.mode, member.uid, member.gid, opts)
            continue
        parent = name.rpartition("/")[0]
        if parent and tree.lookup_dir(parent) is None:
            if not autocreate:
                raise InvalidInputError(f"Parent directory of {name} does not exist in the archive")
            tree.ensure_dir(parent, default_meta)
        if member.isdir():
            node = tree.ensure_dir(name, default_meta)
            node.meta = _dirmeta(repo, stat.S_IFDIR | member.mode, member.uid, member.gid, opts)
        elif member.issym():
            meta = FileMeta(*_owner(member, opts), stat.S_IFLNK | 0o777, member.linkname)
            tree.add_file(name, repo.write_content(meta))
        elif member.islnk():
            links.append((name, _clean(member.linkname)))
        elif member.isreg():
            data = archive.extractfile(member)
            content = data.read() if data else b""
            meta = FileMeta(*_owner(member, opts), stat.S_IFREG | member.mode, "")
            tree.add_file(name, repo.write_content(meta, content))
        else:
            raise InvalidInputError(f"{name}: cannot store special file (device, fifo or socket)")
    for name, target in links:
        _add_hardlink(tree, name, target)
    return write_mutable_tree(repo, tree)


def _clean(name: str) -> str:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidInputError(f"invalid path in archive: {name!r}")
    return "/".join(parts)


def _owner(member: tarfile.TarInfo, opts: TreeWriteOptions) -> tuple[int, int]:
    if opts.canonical_permissions:
        return 0, 0
    uid = member.uid if opts.owner_uid is None else opts.owner_uid
    gid = member.gid if opts.owner_gid is None else opts.owner_gid
    return uid, gid


def _dirmeta(repo: Repo, mode: int, uid: int, gid: int, opts: TreeWriteOptions) -> str:
    if opts.owner_uid is not None:
        uid = opts.owner_uid
    if opts.owner_gid is not None:
        gid = opts.owner_gid
    meta = repo.canonical_dirmeta(DirMeta(uid, gid, mode))
    return repo.write_metadata(ObjectType.DIRMETA, meta.serialize())


def _add_hardlink(tree: MutableTree, name: str, target: str) -> None:
    parent = tree.lookup_dir(target.rpartition("/")[0])
    checksum = parent.files.get(target.rpartition("/")[2]) if parent else None
    if checksum is None:
        raise InvalidInputError(f"hardlink {name} to missing {target}")
    tree.add_file(name, checksum)
