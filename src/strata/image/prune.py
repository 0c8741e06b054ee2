"""Deleting objects that nothing needed reaches any more."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.collection_refs import collection_refs
from strata.image.objects import ObjectType
from strata.image.prefetch import metadata_read_ahead
from strata.image.repo import Repo
from strata.image.traverse import reachable


@dataclass
class PruneOptions:
    refs_only: bool = False
    depth: int = -1
    keep_younger_than: int | None = None  # seconds since the epoch
    delete_commits: tuple[str, ...] = ()
    dry_run: bool = False
    retain_branch_depth: dict[str, int] = field(default_factory=dict)  # ref -> its own depth (-1: all history)
    only_branches: tuple[str, ...] = ()  # prune these refs only; every other ref keeps all its history
    commit_only: bool = False  # traverse and delete commit objects only

    @property
    def per_ref(self) -> bool:
        """Roots chosen ref by ref (ostree's newer prune options); reachability then comes from refs only."""
        return bool(self.retain_branch_depth or self.only_branches or self.keep_younger_than is not None)


@dataclass
class PruneResult:
    total: int
    deleted: int
    freed_bytes: int


def prune(repo: Repo, options: PruneOptions | None = None) -> PruneResult:
    opts = options or PruneOptions()
    with repo.lock(exclusive=True):
        _check_only_branches(repo, opts.only_branches)
        for commit in opts.delete_commits:
            _delete_commit(repo, commit, opts.dry_run)
        walks_history = not opts.refs_only or opts.depth < 0  # else a few commits deep from each ref at most
        with metadata_read_ahead(repo) if walks_history else contextlib.nullcontext():
            keep = reachable(repo, _roots(repo, opts), commit_only=opts.commit_only)
        result = PruneResult(0, 0, 0)
        for checksum, objtype in list(repo.list_objects(ObjectType.COMMIT if opts.commit_only else None)):
            if objtype in (ObjectType.COMMITMETA, ObjectType.TOMBSTONE_COMMIT):
                continue
            result.total += 1
            if (checksum, objtype) in keep:
                continue
            result.freed_bytes += _size(repo.object_path(checksum, objtype))
            result.deleted += 1
            if not opts.dry_run:
                _remove_object(repo, checksum, objtype)
        if not opts.dry_run:
            _delete_orphan_deltas(repo)
        return result


def _check_only_branches(repo: Repo, refs: tuple[str, ...]) -> None:
    for ref in refs:
        if repo.resolve_rev(ref, allow_missing=True) is None:
            raise NotFoundError(f"Refspec '{ref}' not found")


def _roots(repo: Repo, opts: PruneOptions) -> list[tuple[str, int]]:
    if opts.per_ref:
        return _per_ref_roots(repo, opts)
    if opts.refs_only:
        return [(checksum, opts.depth) for checksum in set(held_refs(repo).values())]
    return [(checksum, opts.depth) for checksum, _ in repo.list_objects(ObjectType.COMMIT)]


def held_refs(repo: Repo) -> dict[str, str]:
    """Every ref holding a commit: local refs, remote refs (REMOTE:REF) and mirrored collection refs
    ((COLLECTION, REF))."""
    refs = repo.list_refs()
    refs.update((f"({collection}, {name})", checksum)
                for (collection, name), checksum in collection_refs(repo, heads=False, remotes=False).items())
    return refs


def _per_ref_roots(repo: Repo, opts: PruneOptions) -> list[tuple[str, int]]:
    """Each ref's own depth (--retain-branch-depth; -1 for refs outside --only-branch), else its commits younger
    than --keep-younger-than, else the global --depth."""
    refs = held_refs(repo)
    depths = dict(opts.retain_branch_depth)
    if opts.only_branches:
        for name in refs:
            if name not in opts.only_branches:
                depths.setdefault(name, -1)
    roots: list[tuple[str, int]] = []
    for name, head in refs.items():
        if name in depths:
            roots.append((head, depths[name]))
        elif opts.keep_younger_than is not None:
            roots.extend(_younger_roots(repo, head, opts.keep_younger_than))
        else:
            roots.append((head, opts.depth))
    return roots


def _younger_roots(repo: Repo, head: str, cutoff: int) -> list[tuple[str, int]]:
    """ostree's --keep-younger-than for one ref: its commit is kept, and so are its ancestors up to the first
    one older than the cutoff (everything older goes)."""
    roots = [(head, 0)]
    commit: str | None = head
    while commit is not None and repo.has_object(commit, ObjectType.COMMIT):
        loaded = repo.load_commit(commit)
        if loaded.timestamp < cutoff:
            break
        roots.append((commit, 0))
        commit = loaded.parent
    return roots


def _delete_orphan_deltas(repo: Repo) -> None:
    """Static deltas whose target commit is gone are useless: they go with it, as ostree's prune removes them."""
    from strata.image.deltas import delta_dir, list_deltas
    for name, _digest in list_deltas(repo):
        source, _, target = name.rpartition("-")
        if not repo.has_object(target, ObjectType.COMMIT):
            shutil.rmtree(delta_dir(repo.path, source or None, target), ignore_errors=True)


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
