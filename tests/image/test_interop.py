"""strata and the real ostree read and write each other's repositories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from strata.image.checkout import checkout_commit
from strata.image.repo import Repo
from tests.conftest import run_ostree, untar
from tests.image.helpers import describe_tree, strata

MODES = ["archive", "bare", "bare-user", "bare-user-only"]
REF = "strata/test/x86_64"
COMMIT_ARGS = ["--subject=Initial commit", "--body=First strata test vector.",
               "--add-metadata-string=version=1.0", "--timestamp=@1704067200"]


@pytest.fixture(scope="module")
def tree1(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> Path:
    return untar(vectors / "a/tree1.tar", tmp_path_factory.mktemp("tree1")) / "tree1"


def strata_commit(repo: Path, mode: str, tree: Path) -> str:
    strata("repo", "init", "--repo", str(repo), "--mode", mode)
    return strata("repo", "commit", "--repo", str(repo), "-b", REF, f"--tree=dir={tree}", "-s", "Initial commit",
                  "-m", "First strata test vector.", "--add-metadata-string=version=1.0",
                  "--timestamp=@1704067200").stdout.strip()


def ostree_commit(repo: Path, mode: str, tree: Path) -> str:
    run_ostree(f"--repo={repo}", "init", f"--mode={mode}")
    return run_ostree(f"--repo={repo}", "commit", f"--branch={REF}", *COMMIT_ARGS, str(tree)).stdout.strip()


@pytest.mark.parametrize("mode", MODES)
def test_same_commit_checksum_as_ostree(tmp_path: Path, tree1: Path, mode: str) -> None:
    ours = strata_commit(tmp_path / "strata", mode, tree1)
    theirs = ostree_commit(tmp_path / "ostree", mode, tree1)
    assert ours == theirs
    if mode != "bare-user-only":
        assert ours == "13a0c0833e3b84f1677d22671b552f93b9173761fa6eb9afeb32b263fa52c435"


@pytest.mark.parametrize("mode", MODES)
def test_ostree_accepts_strata_repo(tmp_path: Path, tree1: Path, mode: str) -> None:
    repo = tmp_path / "repo"
    strata_commit(repo, mode, tree1)
    fsck = run_ostree(f"--repo={repo}", "fsck", check=False)
    assert fsck.returncode == 0, fsck.stderr
    assert "no errors found" in fsck.stdout
    theirs = run_ostree(f"--repo={repo}", "ls", "-R", "-X", REF).stdout
    ours = strata("repo", "ls", "--repo", str(repo), "-R", "-X", REF).stdout
    assert ours == theirs
    run_ostree(f"--repo={repo}", "checkout", REF, str(tmp_path / "by-ostree"))
    checkout_commit(Repo.open(repo), Repo.open(repo).resolve_rev(REF) or "", tmp_path / "by-strata")
    keeps_owners = mode != "bare-user-only"
    by_ostree = describe_tree(tmp_path / "by-ostree", xattrs=keeps_owners)
    by_strata = describe_tree(tmp_path / "by-strata", xattrs=keeps_owners)
    assert by_strata == by_ostree
    source = describe_tree(tree1, xattrs=keeps_owners, owners=keeps_owners)
    assert {k: v[:2] + v[4:] for k, v in by_strata.items()} == {k: v[:2] + v[4:] for k, v in source.items()}
    if keeps_owners:
        assert by_strata["/home/user/with-xattr"][5] == ((b"user.a", b"one"), (b"user.b", b"two"))
        assert by_strata["/home/user"][2:4] == (1000, 1000)


@pytest.mark.parametrize("archive", ["a/archive.tar", "a/bare-user.tar", "d/archive.tar"])
def test_strata_reads_ostree_vector_repos(tmp_path: Path, vectors: Path, archive: str) -> None:
    top = untar(vectors / archive, tmp_path / "v")
    repo = next(p for p in top.iterdir() if (p / "config").exists())
    refs = strata("repo", "refs", "--repo", str(repo)).stdout.split()
    assert refs
    for ref in refs:
        assert strata("repo", "log", "--repo", str(repo), ref).stdout == run_ostree(
            f"--repo={repo}", "log", ref).stdout
        assert strata("repo", "ls", "--repo", str(repo), "-R", ref).stdout == run_ostree(
            f"--repo={repo}", "ls", "-R", ref).stdout
    assert "no errors found" in strata("repo", "fsck", "--repo", str(repo)).stdout
    strata("repo", "checkout", "--repo", str(repo), refs[0], str(tmp_path / "co"))
    run_ostree(f"--repo={repo}", "checkout", refs[0], str(tmp_path / "co-ostree"))
    assert describe_tree(tmp_path / "co") == describe_tree(tmp_path / "co-ostree")


def test_strata_reads_fresh_ostree_repo(tmp_path: Path, tree1: Path) -> None:
    repo = tmp_path / "repo"
    ostree_commit(repo, "bare-user", tree1)
    strata("repo", "checkout", "--repo", str(repo), REF, str(tmp_path / "co"))
    assert describe_tree(tmp_path / "co") == describe_tree(tree1)
    assert "no errors found" in strata("repo", "fsck", "--repo", str(repo)).stdout


def test_expected_tree_of_vector(tmp_path: Path, tree1: Path, expected: dict[str, Any]) -> None:
    repo = tmp_path / "repo"
    commit = strata_commit(repo, "archive", tree1)
    listing = strata("repo", "ls", "--repo", str(repo), "-R", "-C", REF).stdout
    for path, info in expected["a"]["trees"][commit].items():
        if "checksum" in info:
            assert f"{info['checksum']} {path}" in listing, json.dumps(info)
