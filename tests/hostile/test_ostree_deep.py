"""A 3,000-level directory chain (deeper than Python's recursion limit, and its paths longer than PATH_MAX):
pull, fsck, ls -R, checkout, diff and the object walks all work, for strata and the real ostree alike."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata.image.commit import load_mutable_tree, write_mutable_tree
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.traverse import reachable
from tests.conftest import run_ostree
from tests.hostile import ostree_repos as H
from tests.image.helpers import strata
from tests.pull.nginx import start_nginx, stop_nginx

DEPTH = 3000


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """A client that pulled two chains differing only in the leaf: (client repo, first, second)."""
    www = tmp_path_factory.mktemp("www")
    server = H.new_server_repo(www / "repo")
    first = H.deep_chain(server, DEPTH)
    second = H.deep_chain(server, DEPTH, leaf=b"changed\n")
    H.raw_commit(server, (server.load_commit(first).root_tree, server.load_commit(first).root_meta),
                 ref="first")
    url, pid_file = start_nginx(www, tmp_path_factory.mktemp("nginx"))
    client = tmp_path_factory.mktemp("client") / "repo"
    try:
        strata("repo", "init", "--repo", str(client), "--mode", "bare-user")
        strata("repo", "remote", "add", "--repo", str(client), "--no-gpg-verify", "origin", f"{url}/repo")
        strata("repo", "pull", "--repo", str(client), "origin", H.REF, "first")
        yield client, first, second
    finally:
        stop_nginx(pid_file)


def test_pulled_chain_is_complete_and_fsck_clean(chains: tuple[Path, str, str]) -> None:
    client, _first, second = chains
    assert Repo.open(client).read_ref(H.REF, remote="origin") == second
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    assert run_ostree(f"--repo={client}", "fsck").returncode == 0


def test_ls_recursive_and_traverse(chains: tuple[Path, str, str]) -> None:
    client, _first, second = chains
    listing = strata("repo", "ls", "--repo", str(client), "-R", second).stdout.splitlines()
    leaf = "/d" * (DEPTH - 1) + "/leaf"
    assert len(listing) == DEPTH + 1 and listing[-1].endswith(leaf)
    objects = reachable(Repo.open(client), [(second, 0)])
    assert sum(1 for _c, t in objects if t is ObjectType.DIRTREE) == DEPTH


def test_diff_between_chains(chains: tuple[Path, str, str]) -> None:
    client, first, second = chains
    out = strata("repo", "diff", "--repo", str(client), first, second).stdout.splitlines()
    assert out == ["M    " + "/d" * (DEPTH - 1) + "/leaf"]


def test_checkout_goes_past_path_max(chains: tuple[Path, str, str], tmp_path: Path) -> None:
    client, _first, second = chains
    dest = tmp_path / "co"
    strata("repo", "checkout", "--repo", str(client), "-U", second, str(dest))
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _level in range(DEPTH - 1):
            fd_next = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = fd_next
        leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        assert os.read(leaf, 100) == b"changed\n"
        os.close(leaf)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co"]
    subprocess.run(["rm", "-rf", str(dest)], check=True)  # shutil.rmtree recurses per level


def test_deep_directory_commits_as_ostree_does(tmp_path: Path) -> None:
    """1,500 levels on disk (about as deep as PATH_MAX lets a path go): strata commits the same dirtrees as
    the real ostree, and layering code reloading and rewriting the tree needs no recursion either."""
    tree = tmp_path / "tree"
    deepest = tree / "/".join(["d"] * 1500)
    subprocess.run(["mkdir", "-p", str(deepest)], check=True)  # Path.mkdir(parents=True) recurses per level
    (deepest / "leaf").write_text("bottom\n")
    ours = H.new_server_repo(tmp_path / "ours")
    commit = strata("repo", "commit", "--repo", str(ours.path), "-b", "deep", f"--tree=dir={tree}").stdout.strip()
    theirs = tmp_path / "theirs"
    run_ostree(f"--repo={theirs}", "init", "--mode=archive")
    run_ostree(f"--repo={theirs}", "commit", "-b", "deep", f"--tree=dir={tree}")
    trees = {name.name for name in (theirs / "objects").rglob("*.dirtree")}
    assert trees == {name.name for name in (ours.path / "objects").rglob("*.dirtree")} and len(trees) == 1501
    loaded = ours.load_commit(commit)
    root = (loaded.root_tree, loaded.root_meta)
    with ours.lock():
        assert write_mutable_tree(ours, load_mutable_tree(ours, *root)) == root
    subprocess.run(["rm", "-rf", str(tree)], check=True)
