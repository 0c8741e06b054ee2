"""ostree's uncompressed-objects-cache: a user-mode checkout of an archive repository fills
REPO/uncompressed-objects-cache/XX/REST.file as the real ostree does (same entries, same modes) and links
the checkout from it, a second checkout only links, each tool uses the other's cache, no_cache (--disable-cache)
and root-mode, copying or disabled checkouts leave it alone, and damaged or planted entries are replaced,
never followed."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from strata.errors import CorruptionError
from strata.image.checkout import CheckoutOptions, checkout_commit
from strata.image.repo import Repo
from strata.image.uncompressed_cache import CACHE_DIR
from tests.conftest import run_ostree
from tests.image.helpers import describe_tree, strata

REF = "cache/test"


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    for d in range(4):
        sub = tree / f"dir{d}"
        sub.mkdir(parents=True)
        for f in range(6):
            (sub / f"f{f}").write_bytes(f"content {d} {f}\n".encode() * (f + 1))
        (sub / "empty").write_bytes(b"")
        (sub / "link").symlink_to("f1")
        (sub / "setuid").write_bytes(b"#!/bin/sh\n")
        (sub / "setuid").chmod(0o4755)
        (sub / "unreadable").write_bytes(b"secret\n")
        (sub / "unreadable").chmod(0o044)
        os.setxattr(sub / "f2", "user.note", b"x")
    return tree


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An archive repository of the same commit made by each tool (copied per test)."""
    base = tmp_path_factory.mktemp("cache")
    tree = make_tree(base)
    ours, theirs = base / "strata", base / "ostree"
    strata("repo", "init", "--repo", str(ours), "--mode", "archive")
    run_ostree(f"--repo={theirs}", "init", "--mode=archive")
    strata("repo", "commit", "--repo", str(ours), "-b", REF, f"--tree=dir={tree}", "--timestamp=@1704067200")
    run_ostree(f"--repo={theirs}", "commit", "-b", REF, f"--tree=dir={tree}", "--timestamp=@1704067200")
    return ours, theirs


@pytest.fixture
def fresh(repos: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    copies = tmp_path / "strata-repo", tmp_path / "ostree-repo"
    for source, target in zip(repos, copies, strict=True):
        subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return copies


def cache_entries(repo: Path) -> dict[str, int]:
    """Entry path -> permission bits."""
    root = repo / CACHE_DIR
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*") if p.is_file()}


def inode(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_dev, st.st_ino


def strata_checkout(repo: Path, dest: Path, *extra: str) -> None:
    strata("repo", "checkout", "--repo", str(repo), *extra, REF, str(dest))


def test_user_checkout_fills_the_cache_as_ostree_and_links_from_it(fresh: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = fresh
    strata_checkout(ours, tmp_path / "co1", "-U")
    run_ostree(f"--repo={theirs}", "checkout", "-U", REF, str(tmp_path / "co-ostree"))
    entries = cache_entries(ours)
    assert entries == cache_entries(theirs)
    assert len(entries) == 4 * 6 + 1  # f0-f5 of each directory, one setuid script; not links, empty, unreadable
    assert all(not mode & (stat.S_ISUID | stat.S_ISGID) for mode in entries.values())
    assert describe_tree(tmp_path / "co1") == describe_tree(tmp_path / "co-ostree")
    cached = {inode(p) for p in (ours / CACHE_DIR).rglob("*.file")}
    for name in ("f0", "f5", "setuid"):
        assert inode(tmp_path / "co1/dir2" / name) in cached
    for name in ("link", "empty", "unreadable"):
        assert inode(tmp_path / "co1/dir2" / name) not in cached
    strata_checkout(ours, tmp_path / "co2", "-U")
    assert cache_entries(ours) == entries
    assert inode(tmp_path / "co2/dir3/f4") == inode(tmp_path / "co1/dir3/f4")
    assert describe_tree(tmp_path / "co2") == describe_tree(tmp_path / "co1")


def test_each_tool_uses_the_cache_the_other_made(fresh: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = fresh
    strata_checkout(ours, tmp_path / "by-strata", "-U")
    run_ostree(f"--repo={ours}", "checkout", "-U", REF, str(tmp_path / "ostree-from-strata-cache"))
    assert inode(tmp_path / "ostree-from-strata-cache/dir0/f3") == inode(tmp_path / "by-strata/dir0/f3")
    run_ostree(f"--repo={theirs}", "checkout", "-U", REF, str(tmp_path / "by-ostree"))
    strata_checkout(theirs, tmp_path / "strata-from-ostree-cache", "-U")
    assert inode(tmp_path / "strata-from-ostree-cache/dir1/f2") == inode(tmp_path / "by-ostree/dir1/f2")
    assert describe_tree(tmp_path / "strata-from-ostree-cache") == describe_tree(tmp_path / "by-ostree")


@pytest.mark.parametrize("how", ["no_cache", "root mode", "force copy", "disabled in config"])
def test_checkouts_that_leave_the_cache_alone(fresh: tuple[Path, Path], tmp_path: Path, how: str) -> None:
    ours, _theirs = fresh
    repo = Repo.open(ours)
    if how == "disabled in config":
        repo.config.set("core", "enable-uncompressed-cache", "false")
        repo.save_config()
        repo = Repo.open(ours)
    options = CheckoutOptions(user_mode=how != "root mode", no_cache=how == "no_cache", force_copy=how == "force copy")
    checkout_commit(repo, repo.resolve_rev(REF) or "", tmp_path / "co", options)
    assert not (ours / CACHE_DIR).exists()
    assert all(p.lstat().st_nlink == 1 for p in (tmp_path / "co").rglob("*") if p.is_file())
    assert (tmp_path / "co/dir1/f3").read_bytes() == b"content 1 3\n" * 4


def test_damaged_or_planted_entries_are_replaced_not_followed(fresh: tuple[Path, Path], tmp_path: Path) -> None:
    ours, _theirs = fresh
    strata_checkout(ours, tmp_path / "first", "-U")
    clean = describe_tree(tmp_path / "first")
    outside = tmp_path / "outside"
    outside.write_bytes(b"not yours\n")
    entries = sorted((ours / CACHE_DIR).rglob("*.file"))
    planted, truncated, chmodded = entries[0], entries[1], entries[2]
    planted.unlink()
    planted.symlink_to(outside)
    truncated_mode = stat.S_IMODE(truncated.lstat().st_mode)
    truncated.chmod(0o644)
    truncated.write_bytes(b"x")
    truncated.chmod(truncated_mode)  # only the size is wrong
    chmodded.chmod(0o777)
    strata_checkout(ours, tmp_path / "second", "-U")
    assert describe_tree(tmp_path / "second") == clean
    assert outside.read_bytes() == b"not yours\n"
    for entry in (planted, truncated, chmodded):
        assert stat.S_ISREG(entry.lstat().st_mode) and stat.S_IMODE(entry.lstat().st_mode) != 0o777


def test_cache_directory_that_is_a_symlink_is_refused(fresh: tuple[Path, Path], tmp_path: Path) -> None:
    ours, _theirs = fresh
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (ours / CACHE_DIR).symlink_to(elsewhere)
    repo = Repo.open(ours)
    with pytest.raises(CorruptionError, match=f"{CACHE_DIR}: .* is not a directory"):
        checkout_commit(repo, repo.resolve_rev(REF) or "", tmp_path / "co", CheckoutOptions(user_mode=True))
    assert list(elsewhere.iterdir()) == []
    result = strata("repo", "checkout", "--repo", str(ours), "-U", REF, str(tmp_path / "co2"), check=False)
    assert result.returncode != 0 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_archive_object_that_is_a_symlink_is_not_followed(fresh: tuple[Path, Path], tmp_path: Path) -> None:
    ours, _theirs = fresh
    repo = Repo.open(ours)
    checksum = repo.load_dirtree(repo.load_dirtree(repo.load_commit(repo.resolve_rev(REF) or "").root_tree)
                                 .dirs["dir0"][0]).files["f1"]
    secret = tmp_path / "secret"
    secret.write_bytes(Path(repo.file_object_path(checksum)).read_bytes())
    os.unlink(repo.file_object_path(checksum))
    os.symlink(secret, repo.file_object_path(checksum))
    with pytest.raises(CorruptionError, match=f"file object {checksum} is a symlink"):
        checkout_commit(repo, repo.resolve_rev(REF) or "", tmp_path / "co", CheckoutOptions(user_mode=True))
    assert not any((ours / CACHE_DIR).rglob(f"{checksum[2:]}.file"))
