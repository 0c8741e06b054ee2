"""Hostile objects already inside a repository (copied in, or written by a tool that does not check):
checkout, deploy, ls and fsck refuse them with one line and write nothing outside their target; commit
timestamps strata cannot show are refused when committing and reported in one line when read."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.image import gvariant
from strata.image import objects as O
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import untar
from tests.hostile import ostree_repos as H
from tests.hostile.test_ostree_pull import one_line_error, snapshot
from tests.image.helpers import strata

MALFORMED = {
    "duplicate file": (H.duplicate_file, "duplicate name 'a'"),
    "duplicate directory": (H.duplicate_dir, "duplicate name 'd'"),
    "file and directory": (H.file_and_dir, "both a file and a directory"),
    "unsorted files": (H.unsorted_files, "unsorted entries ('b' before) 'a'"),
    "unsorted directories": (H.unsorted_dirs, "unsorted entries ('z' before) 'y'"),
}
OS_REF = "strata/os/x86_64"
OS1 = "0c74777d07b5e37fa2cf2337a96657ce4b6ef8fdf0af014783d735d5a1d78458"


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_tree_refused_by_checkout_ls_and_fsck(tmp_path: Path, case: str) -> None:
    builder, message = MALFORMED[case]
    repo = H.new_server_repo(tmp_path / "repo")
    commit = builder(repo)
    root_tree = repo.load_commit(commit).root_tree
    work = tmp_path / "work"
    work.mkdir()
    checkout = strata("repo", "checkout", "--repo", str(repo.path), H.REF, str(work / "dest"), check=False)
    assert message in one_line_error(checkout)
    assert [p.name for p in work.iterdir()] in ([], ["dest"])
    assert not (work / "dest").exists() or not any((work / "dest").iterdir())
    listing = strata("repo", "ls", "--repo", str(repo.path), "-R", H.REF, check=False)
    assert message in one_line_error(listing)
    fsck = strata("repo", "fsck", "--repo", str(repo.path), check=False)
    assert f"Invalid dirtree object {root_tree}" in fsck.stdout and message in fsck.stdout
    assert "missing or corrupt" in one_line_error(fsck)


@pytest.fixture(scope="module")
def osrepo(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> Path:
    return untar(vectors / "b/osrepo.tar", tmp_path_factory.mktemp("osrepo")) / "osrepo"


def test_deploy_refuses_duplicate_names(tmp_path: Path, osrepo: Path) -> None:
    """The vector OS tree with one root entry listed twice: deploy fails and the sysroot is unchanged."""
    sysroot = Sysroot.init_fs(tmp_path / "sysroot")
    sysroot.os_init("stratos")
    pull_local(Repo.open(osrepo), sysroot.repo, [OS_REF], remote="strata", depth=1)
    repo = sysroot.repo
    base = repo.load_commit(OS1)
    files, dirs = gvariant.decode(O.DIRTREE_TYPE, repo.read_metadata(base.root_tree, ObjectType.DIRTREE))
    twice = [dirs[0], *dirs]
    with repo.lock():
        tree = repo.write_metadata(ObjectType.DIRTREE, gvariant.encode(O.DIRTREE_TYPE, (files, twice)))
    evil = H.raw_commit(repo, (tree, base.root_meta), ref="evil")
    before = snapshot(sysroot.path / "boot"), sorted(p.name for p in (sysroot.path / "ostree/deploy/stratos/deploy")
                                                      .iterdir())
    proc = strata("admin", "deploy", "--sysroot", str(sysroot.path), "--os=stratos", evil, check=False)
    assert f"duplicate name '{dirs[0][0]}'" in one_line_error(proc)
    after = snapshot(sysroot.path / "boot"), sorted(p.name for p in (sysroot.path / "ostree/deploy/stratos/deploy")
                                                     .iterdir())
    assert after == before


def test_timestamps_past_year_9999(tmp_path: Path) -> None:
    repo = H.new_server_repo(tmp_path / "repo")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("f\n")
    for stamp in ("@99999999999999", "@253402300800", "@-62135596801"):  # dates before 1970 are fine, as in ostree
        proc = strata("repo", "commit", "--repo", str(repo.path), "-b", "x", f"--tree=dir={tree}",
                      f"--timestamp={stamp}", check=False)
        assert f"Invalid timestamp: {stamp[1:]}" in one_line_error(proc)
    assert repo.list_refs() == {}
    last = strata("repo", "commit", "--repo", str(repo.path), "-b", "x", f"--tree=dir={tree}",
                  "--timestamp=@253402300799").stdout.strip()
    assert "Date:  9999-12-31 23:59:59 +0000" in strata("repo", "show", "--repo", str(repo.path), last).stdout
    H.far_future(repo)  # as the real ostree 2022.7 writes it: it accepts such a timestamp
    for verb in ("log", "show"):
        proc = strata("repo", verb, "--repo", str(repo.path), H.REF, check=False)
        assert one_line_error(proc) == "error: Invalid timestamp: 99999999999999"



@pytest.mark.parametrize(("config", "message"), [
    (bytes(range(256)), "config: not UTF-8 text"),
    (b"[core]\nrepo_version=1\nmode=archive-z2\n[archive]\nzlib-level=fast\n", "invalid value for zlib-level"),
    (b"[core]\nrepo_version=1\nmode=archive-z2\n\0\n", "contains a NUL byte"),
])
def test_garbage_repo_config_refused(tmp_path: Path, config: bytes, message: str) -> None:
    repo = H.new_server_repo(tmp_path / "repo")
    (repo.path / "config").write_bytes(config)
    assert message in one_line_error(strata("repo", "refs", "--repo", str(repo.path), check=False))


def test_garbage_remote_timeout_refused(tmp_path: Path) -> None:
    repo = H.new_server_repo(tmp_path / "repo")
    strata("repo", "remote", "add", "--repo", str(repo.path), "--no-gpg-verify", "--set", "timeout=abc", "origin",
           "http://127.0.0.1:9/repo")
    proc = strata("repo", "pull", "--repo", str(repo.path), "origin", "x", check=False)
    assert "invalid value for timeout in [remote \"origin\"]: 'abc'" in one_line_error(proc)
