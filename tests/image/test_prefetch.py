"""Read-ahead of metadata for history walks: the walk's result is unchanged, odd files in the object store
neither block nor break it, and no thread outlives the block."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from strata.errors import CorruptionError
from strata.image.commit import CommitRequest, write_commit, write_tree_from_dir
from strata.image.objects import ObjectType
from strata.image.prefetch import metadata_read_ahead
from strata.image.prune import PruneOptions, prune
from strata.image.repo import Repo, RepoMode
from strata.image.traverse import reachable


def history(tmp_path: Path, commits: int) -> tuple[Repo, list[str]]:
    repo = Repo.init(tmp_path / "repo", RepoMode.ARCHIVE)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    made: list[str] = []
    for n in range(commits):
        (tree / "sub" / "changing").write_text(str(n))
        parent = made[-1] if made else None
        made.append(write_commit(repo, write_tree_from_dir(repo, tree),
                                 CommitRequest(subject=str(n), timestamp=n, parent=parent)))
    repo.set_ref("main", made[-1])
    return repo, made


def test_walk_under_read_ahead_finds_what_a_plain_walk_finds(tmp_path: Path) -> None:
    repo, made = history(tmp_path, 12)
    plain = reachable(repo, [(made[-1], -1)])
    with metadata_read_ahead(repo):
        ahead = reachable(repo, [(made[-1], -1)])
    assert ahead == plain and sum(1 for _, t in plain if t is ObjectType.COMMIT) == 12


def test_fifo_and_symlink_named_like_objects_do_not_block_and_threads_end(tmp_path: Path) -> None:
    repo, made = history(tmp_path, 3)
    prefix = repo.path / "objects" / "ab"
    prefix.mkdir(exist_ok=True)
    fifo = prefix / f"{'c' * 62}.commit"
    os.mkfifo(fifo)
    (prefix / f"{'d' * 62}.dirtree").symlink_to("/dev/zero")
    before = threading.active_count()
    with pytest.raises(CorruptionError, match=r"^commit object abc+ is not a regular file$"):
        prune(repo, PruneOptions(dry_run=True))  # every commit object is a root of this prune
    assert threading.active_count() == before
    fifo.unlink()
    result = prune(repo, PruneOptions(dry_run=True))
    assert threading.active_count() == before
    assert result.deleted == 1 and repo.resolve_rev("main") == made[-1]  # the stray dirtree symlink
