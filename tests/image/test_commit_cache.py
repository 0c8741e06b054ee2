"""Repo.load_commit reuses a parse only while the object's bytes are the ones it was made from."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.errors import NotFoundError
from strata.image.commit import CommitRequest, write_commit, write_tree_from_dir
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode


def committed(tmp_path: Path, subject: str = "one") -> tuple[Repo, str]:
    tree = tmp_path / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "f").write_text("f\n")
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    root = write_tree_from_dir(repo, tree)
    return repo, write_commit(repo, root, CommitRequest(subject=subject, timestamp=1_700_000_000,
                                                        metadata=[("version", "s", "1")]))


def test_callers_get_their_own_lists(tmp_path: Path) -> None:
    repo, checksum = committed(tmp_path)
    first = repo.load_commit(checksum)
    first.metadata.append(("injected", first.metadata[0][1]))
    first.related.append(("x", b"\0" * 32))
    again = repo.load_commit(checksum)
    assert [key for key, _ in again.metadata] == ["version"] and again.related == []


def test_a_deleted_commit_is_noticed(tmp_path: Path) -> None:
    repo, checksum = committed(tmp_path)
    repo.load_commit(checksum)
    repo.object_path(checksum, ObjectType.COMMIT).unlink()
    with pytest.raises(NotFoundError):
        repo.load_commit(checksum)


def test_changed_bytes_are_parsed_again(tmp_path: Path) -> None:
    repo, checksum = committed(tmp_path)
    other_repo, other = committed(tmp_path / "other", "two")
    assert repo.load_commit(checksum).subject == "one"
    path = repo.object_path(checksum, ObjectType.COMMIT)
    path.chmod(0o644)
    path.write_bytes(other_repo.object_path(other, ObjectType.COMMIT).read_bytes())  # damaged in place
    assert repo.load_commit(checksum).subject == "two"
