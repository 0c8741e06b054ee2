"""Deleting objects that nothing needed reaches any more."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass

from strata.errors import InvalidInputError, NotFoundError, StrataError
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
    if opts.keep_younger_than is not None:
        return _younger_roots(repo, opts.keep_younger_than)
    if opts.refs_only:
        return [(checksum, opts.depth) for checksum in set(repo.list_refs().values())
                if repo.has_object(checksum, ObjectType.COMMIT)]
    return [(checksum, opts.depth) for checksum, _ in repo.list_objects(ObjectType.COMMIT)]


def _younger_roots(repo: Repo, cutoff: int) -> list[tuple[str, int]]:
    """ostree's --keep-younger-than: reachability from the refs only; each ref's commit is kept, and so are
    its ancestors up to the first one older than the cutoff (everything older goes)."""
    roots: list[tuple[str, int]] = []
    for head in set(repo.list_refs().values()):
        if not repo.has_object(head, ObjectType.COMMIT):
            continue
        roots.append((head, 0))
        commit: str | None = head
        while commit is not None and repo.has_object(commit, ObjectType.COMMIT):
            loaded = repo.load_commit(commit)
            if loaded.timestamp < cutoff:
                break
            roots.append((commit, 0))
            commit = loaded.parent
    return roots


def parse_date(text: str) -> int:
    """A date as ostree's prune reads it (gnulib's parse_datetime, the parser of GNU `date -d`): "2024-01-31",
    "2024-01-31 12:00 UTC", "@1700000000", "3 days ago", "yesterday", ...; returns seconds since the epoch."""
    date = shutil.which("date")
    if date is None:
        raise StrataError("GNU date is needed to parse dates")
    proc = subprocess.run([date, "-d", text, "+%s"], capture_output=True, text=True, check=False,
                          env={"TZ": os.environ.get("TZ", "UTC"), "LC_ALL": "C"})
    if proc.returncode != 0 or not proc.stdout.strip().lstrip("-").isdigit():
        raise InvalidInputError(f"Could not parse '{text}'")
    return int(proc.stdout.strip())


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
