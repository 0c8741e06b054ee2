"""OSTREE_REPO_TEST_ERROR=pre-commit stops any commit before its commit object, as libostree does."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.image.commit import CommitRequest, write_commit, write_tree_from_dir
from strata.image.repo import Repo, RepoMode


def test_pre_commit_fault_leaves_a_staging_directory_and_no_commit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("f\n")
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE_USER)
    root = write_tree_from_dir(repo, tree)
    monkeypatch.setenv("OSTREE_REPO_TEST_ERROR", "other,pre-commit")
    monkeypatch.setenv("OSTREE_BOOTID", "feedface")
    with pytest.raises(StrataError, match="OSTREE_REPO_TEST_ERROR_PRE_COMMIT"):
        write_commit(repo, root, CommitRequest(subject="s", timestamp=1))
    assert len([p for p in (repo.path / "tmp").iterdir() if p.name.startswith("staging-feedface-")]) == 1
    assert not list((repo.path / "objects").rglob("*.commit"))
    monkeypatch.delenv("OSTREE_REPO_TEST_ERROR")
    checksum = write_commit(repo, root, CommitRequest(subject="s", timestamp=1))
    assert repo.load_commit(checksum).subject == "s"
