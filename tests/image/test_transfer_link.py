"""A local pull hardlinks objects between repositories on one filesystem, and never an object whose bytes
do not match its name unless the caller trusts the source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.image.commit import CommitRequest, write_commit, write_tree_from_dir
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from strata.image.transfer import pull_local
from strata.image.traverse import commit_objects


def source_with_commit(tmp_path: Path) -> tuple[Repo, str, dict[str, str]]:
    tree = tmp_path / "tree"
    (tree / "usr").mkdir(parents=True)
    names = {"a": "alpha\n", "b": "beta\n", "c": "gamma\n"}
    for name, text in names.items():
        (tree / "usr" / name).write_text(text)
    repo = Repo.init(tmp_path / "source", RepoMode.BARE_USER)
    commit = write_commit(repo, write_tree_from_dir(repo, tree), CommitRequest(subject="s", timestamp=1))
    repo.set_ref("os", commit)
    return repo, commit, names


def content_objects(repo: Repo, commit: str) -> list[str]:
    return sorted(c for c, t in commit_objects(repo, commit) if t is ObjectType.FILE)


def same_inode(a: Path, b: Path) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino


def test_linked_pull_shares_inodes_and_the_commit_checks_out(tmp_path: Path) -> None:
    source, commit, _ = source_with_commit(tmp_path)
    target = Repo.init(tmp_path / "target", RepoMode.BARE_USER)
    assert pull_local(source, target, ["os"], link=True) == {"os": commit}
    contents = content_objects(source, commit)
    assert len(contents) == 3
    for checksum in contents:
        assert same_inode(source.object_path(checksum, ObjectType.FILE), target.object_path(checksum, ObjectType.FILE))
        target.verify_content(checksum)
    assert target.resolve_rev("os") == commit and not target.is_partial(commit)


def test_a_corrupt_object_is_not_linked_and_the_pull_fails(tmp_path: Path) -> None:
    source, commit, _ = source_with_commit(tmp_path)
    victim = content_objects(source, commit)[0]
    path = source.object_path(victim, ObjectType.FILE)
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size, other bytes
    target = Repo.init(tmp_path / "target", RepoMode.BARE_USER)
    with pytest.raises(StrataError):
        pull_local(source, target, ["os"], link=True)
    victim_in_target = target.object_path(victim, ObjectType.FILE)
    assert not victim_in_target.exists() or not same_inode(path, victim_in_target)
    assert target.resolve_rev("os", allow_missing=True) is None


def test_without_link_nothing_is_shared(tmp_path: Path) -> None:
    source, commit, _ = source_with_commit(tmp_path)
    target = Repo.init(tmp_path / "target", RepoMode.BARE_USER)
    pull_local(source, target, ["os"])
    for checksum in content_objects(source, commit):
        assert not same_inode(source.object_path(checksum, ObjectType.FILE),
                              target.object_path(checksum, ObjectType.FILE))
