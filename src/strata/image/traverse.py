"""Walking what a commit reaches: its dirtrees, dirmetas and content objects (and its parents)."""

from __future__ import annotations

from collections.abc import Iterator

from strata.errors import NotFoundError
from strata.image.objects import ObjectType
from strata.image.repo import Repo

ObjectName = tuple[str, ObjectType]


def commit_objects(repo: Repo, commit: str, seen_trees: set[str] | None = None) -> Iterator[ObjectName]:
    """The commit and every object of its tree (each dirtree walked once per seen_trees)."""
    yield commit, ObjectType.COMMIT
    loaded = repo.load_commit(commit)
    yield loaded.root_meta, ObjectType.DIRMETA
    yield from tree_objects(repo, loaded.root_tree, seen_trees if seen_trees is not None else set())


def tree_objects(repo: Repo, dirtree: str, seen: set[str]) -> Iterator[ObjectName]:
    stack = [dirtree]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current, ObjectType.DIRTREE
        tree = repo.load_dirtree(current)
        for checksum in tree.files.values():
            yield checksum, ObjectType.FILE
        for sub_tree, sub_meta in tree.dirs.values():
            yield sub_meta, ObjectType.DIRMETA
            stack.append(sub_tree)


def history(repo: Repo, commit: str, depth: int = -1) -> Iterator[str]:
    """commit and its ancestors present in the repo, up to depth parents (-1: all)."""
    current: str | None = commit
    steps = 0
    while current is not None:
        yield current
        if depth >= 0 and steps >= depth:
            return
        try:
            parent = repo.load_commit(current).parent
        except NotFoundError:
            return
        if parent is None or not repo.has_object(parent, ObjectType.COMMIT):
            return
        current = parent
        steps += 1


def reachable(repo: Repo, roots: list[tuple[str, int]], *, commit_only: bool = False) -> set[ObjectName]:
    """Everything reachable from (commit, depth) roots (with commit_only, the commits alone).

    A commit met again is walked further only when this root asks for more of its history than the walks
    before did, so every root gets its full depth whatever the order of the roots, and no history is walked
    twice for the same depth."""
    found: set[ObjectName] = set()
    seen_trees: set[str] = set()
    depth_walked: dict[str, int] = {}  # commit -> parents already walked from it (-1: all)
    for root, depth in roots:
        commit: str | None = root
        left = depth
        while commit is not None and not _walked_enough(depth_walked.get(commit), left):
            if not repo.has_object(commit, ObjectType.COMMIT):
                break  # history may end early: repos often hold only recent commits
            loaded = repo.load_commit(commit)
            if commit not in depth_walked:
                found.add((commit, ObjectType.COMMIT))
                if not commit_only:
                    found.add((loaded.root_meta, ObjectType.DIRMETA))
                    _add_tree(repo, loaded.root_tree, seen_trees, found, partial=repo.is_partial(commit))
            depth_walked[commit] = left
            if left == 0:
                break
            commit = loaded.parent
            left = left - 1 if left > 0 else -1
    return found


def _walked_enough(walked: int | None, wanted: int) -> bool:
    if walked is None:
        return False
    return walked == -1 or (wanted != -1 and wanted <= walked)


def _add_tree(repo: Repo, dirtree: str, seen: set[str], found: set[ObjectName], *, partial: bool = False) -> None:
    """tree_objects into a set, without a generator step per object (prune walks every object of a sysroot)."""
    file_type, tree_type, meta_type = ObjectType.FILE, ObjectType.DIRTREE, ObjectType.DIRMETA
    stack = [dirtree]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        found.add((current, tree_type))
        if partial and not repo.has_object(current, tree_type):
            continue  # a partial commit (e.g. pulled --commit-metadata-only) lacks parts of its tree
        tree = repo.load_dirtree(current)
        found.update([(checksum, file_type) for checksum in tree.files.values()])
        for sub_tree, sub_meta in tree.dirs.values():
            found.add((sub_meta, meta_type))
            stack.append(sub_tree)
