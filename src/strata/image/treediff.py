"""`ostree diff`: compare two trees, each a commit or a directory on disk, as ostree reports it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from strata.image import objects as O
from strata.image.fsutil import read_xattrs
from strata.image.objects import DirMeta, FileMeta
from strata.image.repo import Repo

# path -> (is_dir, checksum): a file's content checksum, a directory's dirmeta checksum
Listing = dict[str, tuple[bool, str]]


@dataclass(frozen=True)
class DiskOptions:
    owner_uid: int | None = None
    owner_gid: int | None = None
    no_xattrs: bool = False


def commit_listing(repo: Repo, root: tuple[str, str]) -> Listing:
    listing: Listing = {"/": (True, root[1])}
    stack = [("", root)]
    while stack:
        prefix, (tree_csum, _meta) = stack.pop()
        tree = repo.load_dirtree(tree_csum)
        for name, checksum in tree.files.items():
            listing[f"{prefix}/{name}"] = (False, checksum)
        for name, pair in tree.dirs.items():
            listing[f"{prefix}/{name}"] = (True, pair[1])
            stack.append((f"{prefix}/{name}", pair))
    return listing


def disk_listing(root: Path, options: DiskOptions) -> Listing:
    listing: Listing = {"/": (True, _dir_checksum(str(root), os.lstat(root), options))}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root) if dirpath != str(root) else ""
        rel = "" if rel == "/." else rel
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                listing[f"{rel}/{name}"] = (True, _dir_checksum(path, st, options))
            else:
                listing[f"{rel}/{name}"] = (False, _file_checksum(path, st, options))
    return listing


def _owner(st: os.stat_result, options: DiskOptions) -> tuple[int, int]:
    return (st.st_uid if options.owner_uid is None else options.owner_uid,
            st.st_gid if options.owner_gid is None else options.owner_gid)


def _xattrs(path: str, options: DiskOptions) -> tuple[tuple[bytes, bytes], ...]:
    return () if options.no_xattrs else tuple(read_xattrs(path))


def _dir_checksum(path: str, st: os.stat_result, options: DiskOptions) -> str:
    return O.sha256_hex(DirMeta(*_owner(st, options), st.st_mode, _xattrs(path, options)).serialize())


def _file_checksum(path: str, st: os.stat_result, options: DiskOptions) -> str:
    uid, gid = _owner(st, options)
    if stat.S_ISLNK(st.st_mode):
        return O.content_checksum(FileMeta(uid, gid, st.st_mode, os.readlink(path), _xattrs(path, options)))
    with open(path, "rb") as f:
        return O.content_checksum(FileMeta(uid, gid, st.st_mode, "", _xattrs(path, options)), f.read())


def diff_listings(old: Listing, new: Listing) -> list[tuple[str, str]]:
    """('M'|'D'|'A', path): modified first, then removed, then added, each in path order."""
    modified = [p for p in sorted(old) if p in new and old[p] != new[p] and p != "/"]
    removed = [p for p in sorted(old) if p not in new]
    added = [p for p in sorted(new) if p not in old]
    return [("M", p) for p in modified] + [("D", p) for p in removed] + [("A", p) for p in added]
