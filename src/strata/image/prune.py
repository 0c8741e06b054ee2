"""Deleting objects that nothing needed reaches any more."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from strata.errors import NotFoundError
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.traverse import reachable


@dataclass
class PruneOptions:
    refs_only: bool = False
    depth: int = -1
    keep_younger_than: int | None = None  # seconds since the epoch
    delete_commits: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass
class PruneResult:
    total: int
    deleted: int
    freed_bytes: int


def prune(repo: Repo, options: PruneOptions | None = None) -> PruneResult:
    opts = options or PruneOptions()
    with repo.lock(exclusive=True):
        for commit in opts.delete_commits:
            _delete_commit(repo, commit, opts.dry_run)
        keep = reachable(repo, _roots(repo, opts))
        total = 0
        deleted = 0
        freed = 0
        for checksum, objtype in list(repo.list_objects()):
            if objtype in (ObjectType.COMMITMETA, ObjectType.TOMBSTONE_COMMIT):
                continue
            total += 1
            if (checksum, objtype) in keep:
                continue
            path = repo.object_path(checksum, objtype)
            size = _size(path)
            if not opts.dry_run:
                _remove_object(repo, checksum, objtype)
            deleted += 1
            freed += size
        return PruneResult(total, deleted, freed)


def _roots(repo: Repo, opts: PruneOptions) -> list[tuple[str, int]]:
    if opts.refs_only:
        roots = [(checksum, opts.depth) for checksum in set(repo.list_refs().values())
                 if repo.has_object(checksum, ObjectType.COMMIT)]
    else:
        roots = [(checksum, opts.depth) for checksum, _ in repo.list_objects(ObjectType.COMMIT)]
    if opts.keep_younger_than is not None:
        for checksum, _ in repo.list_objects(ObjectType.COMMIT):
            if repo.load_commit(checksum).timestamp >= opts.keep_younger_than:
                roots.append((checksum, 0))
    return roots


def _delete_commit(repo: Repo, commit: str, dry_run: bool) -> None:
    if not repo.has_object(commit, ObjectType.COMMIT):
        raise NotFoundError(f"commit {commit} not found")
    if dry_run:
        return
    if repo.config.get_bool("core", "tombstone-commits", False):
        from strata.image.objects import tombstone
        path = repo.object_path(commit, ObjectType.TOMBSTONE_COMMIT)
        path.write_bytes(tombstone(commit))
    _remove_object(repo, commit, ObjectType.COMMIT)


def _remove_object(repo: Repo, checksum: str, objtype: ObjectType) -> None:
    with contextlib.suppress(FileNotFoundError):
        repo.object_path(checksum, objtype).unlink()
    if objtype is ObjectType.COMMIT:
        with contextlib.suppress(FileNotFoundError):
            repo.object_path(checksum, ObjectType.COMMITMETA).unlink()
        repo.clear_partial(checksum)


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0
