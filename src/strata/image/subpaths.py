"""`pull --subpath=PATH`: which parts of a commit's tree a partial pull fetches (ostree's matching rule).

A directory on the way down to a requested path is walked (its dirtree and dirmeta fetched) but only the
entries leading further down are taken; everything under a requested path is taken whole. A requested path
may name a file. The commit stays partial after such a pull; a later full pull completes it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strata.errors import InvalidInputError
from strata.image.objects import ObjectType

if TYPE_CHECKING:
    from strata.image.repo import Repo

ObjectName = tuple[str, ObjectType]


@dataclass(frozen=True)
class Subpaths:
    """The absolute paths asked for; empty means the whole tree."""

    paths: tuple[str, ...] = ()

    @classmethod
    def parse(cls, paths: list[str] | tuple[str, ...]) -> Subpaths:
        for path in paths:
            if not path.startswith("/"):
                raise InvalidInputError(f"Subpath must be absolute: {path}")
        return cls(tuple(paths))

    @property
    def whole(self) -> bool:
        return not self.paths

    def wants(self, directory: str, name: str, *, is_dir: bool) -> bool:
        """Whether entry name of directory (written '/' or '/a/b/') is fetched."""
        if self.whole:
            return True
        entry = directory + name
        return any(_matches(entry, wanted, is_dir) for wanted in self.paths)


def _matches(entry: str, wanted: str, is_dir: bool) -> bool:
    if wanted.startswith(entry):
        rest = wanted[len(entry):]
        if not rest:
            return True  # the requested path itself, file or directory
        return rest.startswith("/") and is_dir  # a directory on the way down to it
    # inside a requested directory (the whole component matched, not /foo against /fooo)
    return entry.startswith(wanted) and entry[len(wanted):].startswith("/")


def commit_objects(repo: Repo, commit: str, subpaths: Subpaths) -> Iterator[ObjectName]:
    """The commit and the objects of its tree that subpaths selects, read from repo (each directory walked
    once per path, since one dirtree can sit both inside and outside a requested path)."""
    yield commit, ObjectType.COMMIT
    loaded = repo.load_commit(commit)
    yield loaded.root_meta, ObjectType.DIRMETA
    stack = [(loaded.root_tree, "/")]
    seen: set[tuple[str, str]] = set()
    while stack:
        tree_checksum, path = stack.pop()
        key = (tree_checksum, "" if subpaths.whole else path)
        if key in seen:
            continue
        seen.add(key)
        yield tree_checksum, ObjectType.DIRTREE
        tree = repo.load_dirtree(tree_checksum)
        for name, checksum in tree.files.items():
            if subpaths.wants(path, name, is_dir=False):
                yield checksum, ObjectType.FILE
        for name, (sub_tree, sub_meta) in tree.dirs.items():
            if subpaths.wants(path, name, is_dir=True):
                yield sub_meta, ObjectType.DIRMETA
                stack.append((sub_tree, f"{path}{name}/"))
