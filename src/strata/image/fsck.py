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
from strata.image.repo import Repo

_WORKERS = max(2, (os.cpu_count() or 1) * 2)
_BATCH = 128  # content objects per job: one future per batch, not per object
Progress = Callable[[str], None]


@dataclass
class FsckReport:
    commits: int = 0
    partial: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)
    bad_objects: list[tuple[str, ObjectType]] = field(default_factory=list)
    bad_commits: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(repo: Repo, *, delete: bool = False, progress: Progress | None = None) -> FsckReport:
    report = FsckReport()
    _check_refs(repo, report)
    commits = sorted(c for c, _ in repo.list_objects(ObjectType.COMMIT))
    checked: dict[tuple[str, ObjectType], bool] = {}
    contents: dict[str, set[str]] = {}  # content checksum -> commits using it
    for commit in commits:
        if repo.is_partial(commit):
            report.partial += 1
            continue
        report.commits += 1
        _walk_commit(repo, commit, report, checked, contents)
    _verify_contents(repo, report, checked, contents)
    report.objects = len(checked)
    if delete:
        _delete_bad(repo, report)
    if progress:
        progress(f"Verified {report.objects} objects of {report.commits} commits")
    return report


def _check_refs(repo: Repo, report: FsckReport) -> None:
    for name, checksum in repo.list_refs().items():
        if not repo.has_object(checksum, ObjectType.COMMIT):
            report.problems.append(f"Ref {name} points to missing commit {checksum}")


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


def _walk_commit(repo: Repo, commit: str, report: FsckReport, checked: dict[tuple[str, ObjectType], bool],
                 contents: dict[str, set[str]]) -> None:
    loaded = _checked_metadata(repo, commit, ObjectType.COMMIT, commit, report, checked)
    if not isinstance(loaded, Commit):
        return
    _checked_metadata(repo, loaded.root_meta, ObjectType.DIRMETA, commit, report, checked)
    stack = [loaded.root_tree]
    while stack:
        tree_csum = stack.pop()
        if (tree_csum, ObjectType.DIRTREE) in checked:
            continue
        tree = _checked_metadata(repo, tree_csum, ObjectType.DIRTREE, commit, report, checked)
        if not isinstance(tree, DirTree):
            continue
        for checksum in tree.files.values():
            contents.setdefault(checksum, set()).add(commit)
        for sub_tree, sub_meta in tree.dirs.values():
            _checked_metadata(repo, sub_meta, ObjectType.DIRMETA, commit, report, checked)
            stack.append(sub_tree)


def _checked_metadata(repo: Repo, checksum: str, objtype: ObjectType, commit: str, report: FsckReport,
                      checked: dict[tuple[str, ObjectType], bool]) -> object:
    key = (checksum, objtype)
    if key in checked and objtype is not ObjectType.DIRTREE:
        return None
    try:
        value = _verify_metadata(repo, checksum, objtype)
        checked[key] = True
        return value
    except NotFoundError:
        report.problems.append(f"Missing {objtype.value} object {checksum} (in commit {commit})")
    except CorruptionError as exc:
        report.problems.append(f"{exc} (in commit {commit})")
        report.bad_objects.append(key)
    checked[key] = False
    report.bad_commits.add(commit)
    return None


def _verify_contents(repo: Repo, report: FsckReport, checked: dict[tuple[str, ObjectType], bool],
                     contents: dict[str, set[str]]) -> None:
    def verify(checksum: str) -> str | None:
        try:
            repo.verify_content(checksum)
            return None
        except NotFoundError:
            return f"Missing file object {checksum}"
        except (CorruptionError, OSError, StrataError) as exc:
            return f"Corrupted file object {checksum}: {exc}"

    def verify_batch(batch: list[str]) -> list[str | None]:
        return [verify(checksum) for checksum in batch]

    order = list(contents)
    batches = [order[i:i + _BATCH] for i in range(0, len(order), _BATCH)]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        problems = [problem for batch in pool.map(verify_batch, batches) for problem in batch]
        for checksum, problem in zip(order, problems, strict=True):
            checked[(checksum, ObjectType.FILE)] = problem is None
            if problem is None:
                continue
            users = sorted(contents[checksum])
            report.problems.append(f"{problem} (in commit {users[0]})")
            if problem.startswith("Corrupted"):
                report.bad_objects.append((checksum, ObjectType.FILE))
            report.bad_commits.update(users)


def _delete_bad(repo: Repo, report: FsckReport) -> None:
    with repo.lock():
        for checksum, objtype in report.bad_objects:
            with contextlib.suppress(FileNotFoundError):
                repo.object_path(checksum, objtype).unlink()
        for commit in report.bad_commits:
            if repo.has_object(commit, ObjectType.COMMIT):
                repo.mark_partial(commit, b"f")
