"""Verifying a repository: every reachable object is present, well-formed and matches its checksum."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image.objects import Commit, DirMeta, DirTree, ObjectType
from strata.image.parents import repo_chain
from strata.image.repo import Repo

_WORKERS = max(2, (os.cpu_count() or 1) * 2)
_BATCH = 128  # content objects per job: one future per batch, not per object
Progress = Callable[[str], None]
ObjectName = tuple[str, ObjectType]
_NOTHING: frozenset[ObjectName] = frozenset()


@dataclass
class BadObject:
    """An object a verified commit needs that is gone (missing) or does not match its name (corrupt)."""

    checksum: str
    objtype: ObjectType
    missing: bool
    cause: str = ""  # why a corrupt object is refused (names the object for metadata)
    commits: list[str] = field(default_factory=list)  # every verified commit reaching it, sorted

    @property
    def key(self) -> ObjectName:
        return self.checksum, self.objtype

    @property
    def detail(self) -> str:
        """What is wrong, in one line."""
        if self.missing:
            return f"Missing {self.objtype.value} object {self.checksum}"
        if self.objtype is ObjectType.FILE:
            return f"Corrupted file object {self.checksum}: {self.cause}"
        return self.cause


@dataclass
class FsckReport:
    commits: int = 0
    partial: int = 0
    objects: int = 0
    missing_refs: list[tuple[str, str]] = field(default_factory=list)  # (ref, the commit it names)
    bad: list[BadObject] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)  # commits this run marked partial, in order

    @property
    def problems(self) -> list[str]:
        lines = [f"Ref {name} points to missing commit {checksum}" for name, checksum in self.missing_refs]
        return lines + [f"{bad.detail} (in commit {bad.commits[0]})" if bad.commits else bad.detail
                        for bad in self.bad]

    @property
    def bad_commits(self) -> set[str]:
        return {commit for bad in self.bad for commit in bad.commits}

    @property
    def ok(self) -> bool:
        return not self.missing_refs and not self.bad


def fsck(repo: Repo, *, delete: bool = False, mark_missing: bool = False,
         progress: Progress | None = None) -> FsckReport:
    """Verify every object the complete commits reach. delete: corrupt objects go, and the commits reaching them
    or a missing object become partial; mark_missing: commits reaching a missing object become partial (as
    ostree's fsck does even without --delete), so a later pull completes them."""
    report = FsckReport()
    _check_refs(repo, report)
    verified: list[str] = []
    for commit in sorted(c for c, _ in repo.list_objects(ObjectType.COMMIT)):
        if repo.is_partial(commit):
            report.partial += 1
        else:
            verified.append(commit)
    report.commits = len(verified)
    checked: dict[ObjectName, bool] = {}
    contents: set[str] = set()
    chain = repo_chain(repo)
    for commit in verified:
        _walk_commit(chain, commit, report, checked, contents)
    _verify_contents(chain, report, checked, contents)
    report.objects = len(checked)
    if report.bad:
        _attribute(chain, verified, report.bad)
        _repair(repo, report, delete=delete, mark_missing=mark_missing)
    if progress:
        progress(f"Verified {report.objects} objects of {report.commits} commits")
    return report


def _check_refs(repo: Repo, report: FsckReport) -> None:
    for name, checksum in repo.list_refs().items():
        if not repo.has_object(checksum, ObjectType.COMMIT):
            report.missing_refs.append((name, checksum))


def _verify_metadata(repo: Repo, checksum: str, objtype: ObjectType) -> object:
    data = repo.read_metadata(checksum, objtype)
    actual = hashlib.sha256(data).hexdigest()
    if actual != checksum:
        raise CorruptionError(f"Corrupted {objtype.value} object {checksum}; actual checksum {actual}")
    parser = {ObjectType.COMMIT: Commit.parse, ObjectType.DIRTREE: DirTree.parse,
              ObjectType.DIRMETA: DirMeta.parse}[objtype]
    try:
        return parser(data)
    except (CorruptionError, InvalidInputError) as exc:
        raise CorruptionError(f"Invalid {objtype.value} object {checksum}: {exc}") from None


def _holder(chain: list[Repo], checksum: str, objtype: ObjectType) -> Repo:
    """The repository of the chain that holds an object: a child repository's objects may be its parent's
    (core.parent), as ostree's lookups allow."""
    if len(chain) > 1:
        for repo in chain:
            if repo.has_object(checksum, objtype):
                return repo
    return chain[0]


def _walk_commit(chain: list[Repo], commit: str, report: FsckReport, checked: dict[ObjectName, bool],
                 contents: set[str]) -> None:
    loaded = _checked_metadata(chain, commit, ObjectType.COMMIT, report, checked)
    if not isinstance(loaded, Commit):
        return
    _checked_metadata(chain, loaded.root_meta, ObjectType.DIRMETA, report, checked)
    stack = [loaded.root_tree]
    while stack:
        tree_csum = stack.pop()
        if (tree_csum, ObjectType.DIRTREE) in checked:
            continue
        tree = _checked_metadata(chain, tree_csum, ObjectType.DIRTREE, report, checked)
        if not isinstance(tree, DirTree):
            continue
        contents.update(tree.files.values())
        for sub_tree, sub_meta in tree.dirs.values():
            _checked_metadata(chain, sub_meta, ObjectType.DIRMETA, report, checked)
            stack.append(sub_tree)


def _checked_metadata(chain: list[Repo], checksum: str, objtype: ObjectType, report: FsckReport,
                      checked: dict[ObjectName, bool]) -> object:
    """The parsed object when it is sound and not checked before; problems go into the report once."""
    key = (checksum, objtype)
    if key in checked:
        return None
    try:
        value = _verify_metadata(_holder(chain, checksum, objtype), checksum, objtype)
        checked[key] = True
        return value
    except NotFoundError:
        report.bad.append(BadObject(checksum, objtype, True))
    except CorruptionError as exc:
        report.bad.append(BadObject(checksum, objtype, False, str(exc)))
    checked[key] = False
    return None


def _verify_contents(chain: list[Repo], report: FsckReport, checked: dict[ObjectName, bool],
                     contents: set[str]) -> None:
    def verify(checksum: str) -> BadObject | None:
        try:
            _holder(chain, checksum, ObjectType.FILE).verify_content(checksum)
            return None
        except NotFoundError:
            return BadObject(checksum, ObjectType.FILE, True)
        except (CorruptionError, OSError, StrataError) as exc:
            return BadObject(checksum, ObjectType.FILE, False, str(exc))

    def verify_batch(batch: list[str]) -> list[BadObject | None]:
        return [verify(checksum) for checksum in batch]

    order = sorted(contents)
    batches = [order[i:i + _BATCH] for i in range(0, len(order), _BATCH)]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = [result for batch in pool.map(verify_batch, batches) for result in batch]
    for checksum, bad in zip(order, results, strict=True):
        checked[(checksum, ObjectType.FILE)] = bad is None
        if bad is not None:
            report.bad.append(bad)


def _attribute(chain: list[Repo], commits: list[str], bad: list[BadObject]) -> None:
    """Name, for every bad object, all the commits that reach it (an object shared by several commits makes
    each of them incomplete, not only the one whose walk met it first)."""
    by_key = {item.key: item for item in bad}
    memo: dict[str, frozenset[ObjectName]] = {}
    for commit in commits:
        if (commit, ObjectType.COMMIT) in by_key:
            by_key[(commit, ObjectType.COMMIT)].commits.append(commit)
            continue
        loaded = chain[0].load_commit(commit)
        hits = set(_bad_in_tree(chain, loaded.root_tree, by_key, memo))
        if (loaded.root_meta, ObjectType.DIRMETA) in by_key:
            hits.add((loaded.root_meta, ObjectType.DIRMETA))
        for key in hits:
            by_key[key].commits.append(commit)


def _bad_in_tree(chain: list[Repo], root: str, bad: dict[ObjectName, BadObject],
                 memo: dict[str, frozenset[ObjectName]]) -> frozenset[ObjectName]:
    """The bad objects under a dirtree (itself included), memoized per dirtree; iterative, as trees from
    outside may nest deeper than Python's recursion allows."""
    stack: list[tuple[str, DirTree | None]] = [(root, None)]
    while stack:
        tree_csum, loaded = stack.pop()
        if tree_csum in memo:
            continue
        if (tree_csum, ObjectType.DIRTREE) in bad:
            memo[tree_csum] = frozenset({(tree_csum, ObjectType.DIRTREE)})
            continue
        if loaded is None:
            try:
                loaded = _holder(chain, tree_csum, ObjectType.DIRTREE).load_dirtree(tree_csum)
            except (NotFoundError, CorruptionError, InvalidInputError):
                memo[tree_csum] = _NOTHING  # changed since it was verified: reported by the next fsck
                continue
            stack.append((tree_csum, loaded))
            stack.extend((sub, None) for sub, _meta in loaded.dirs.values() if sub not in memo)
            continue
        hits = {(c, ObjectType.FILE) for c in loaded.files.values() if (c, ObjectType.FILE) in bad}
        hits.update((meta, ObjectType.DIRMETA) for _sub, meta in loaded.dirs.values()
                    if (meta, ObjectType.DIRMETA) in bad)
        for sub, _meta in loaded.dirs.values():
            hits.update(memo.get(sub, _NOTHING))
        memo[tree_csum] = frozenset(hits) if hits else _NOTHING
    return memo[root]


def _repair(repo: Repo, report: FsckReport, *, delete: bool, mark_missing: bool) -> None:
    """Delete corrupt objects (delete) and mark the commits that lack an object partial ('f': found by fsck)."""
    if not (delete or mark_missing):
        return
    with repo.lock():
        for item in report.bad:
            if item.missing and not (mark_missing or delete):
                continue
            if not item.missing:
                if not delete:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    repo.object_path(item.checksum, item.objtype).unlink()
            for commit in item.commits:
                if commit in report.marked or not repo.has_object(commit, ObjectType.COMMIT):
                    continue
                repo.mark_partial(commit, b"f")
                report.marked.append(commit)
