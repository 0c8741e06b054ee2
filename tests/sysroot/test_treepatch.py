"""Patching the checkout of one commit into another's gives the tree a checkout of the other gives; a staged
deployment that replaces another is patched from the replaced one's tree (a spare in the trash)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from strata.core.invariants import check_invariants
from strata.image.checkout import checkout_commit
from strata.image.commit import CommitRequest, write_commit, write_tree_from_dir
from strata.image.repo import Repo, RepoMode
from strata.sysroot.sysroot import TRASH_DIR, Sysroot
from strata.sysroot.treepatch import MAX_CHANGES, patch_checkout
from tests.sysroot.conftest import OS1, OS2
from tests.sysroot.test_sysroot import admin

Entry = tuple[object, ...]


def describe(root: Path) -> dict[str, Entry]:
    """Every entry below root as a checkout defines it: type, mode, owner, directory mtime and xattrs, the
    object a hardlinked file is (its inode), a copied file's bytes, a symlink's target."""
    found: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            common = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISDIR(st.st_mode):
                xattrs = sorted((n, os.getxattr(path, n, follow_symlinks=False))
                                for n in os.listxattr(path, follow_symlinks=False))
                found[str(path.relative_to(root))] = (*common, st.st_mtime, tuple(xattrs))
            elif stat.S_ISLNK(st.st_mode):
                found[str(path.relative_to(root))] = (*common, os.readlink(path))
            else:
                identity = st.st_ino if st.st_nlink > 1 else hashlib.sha256(path.read_bytes()).hexdigest()
                found[str(path.relative_to(root))] = (*common, st.st_size, identity)
    return found


def commit_dir(repo: Repo, tree: Path) -> str:
    with repo.lock():
        return write_commit(repo, write_tree_from_dir(repo, tree), CommitRequest(subject="t", timestamp=0))


def make_tree(root: Path, variant: int) -> Path:
    """Two variants that differ in every way a tree can: files changed, added, removed, a file turned into a
    directory and back, a directory removed and one added, a directory's mode, a symlink's target; most of
    the tree the same."""
    for sub in range(20):
        same = root / "usr/share" / f"pkg{sub}"
        same.mkdir(parents=True)
        (same / "data").write_text(f"same {sub}\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text(f"tool v{variant}\n")
    (root / "usr/bin/empty").write_bytes(b"")
    (root / "usr/lib").mkdir()
    (root / "usr/lib/link").symlink_to(f"target{variant}")
    if variant == 1:
        (root / "usr/bin/old-only").write_text("old\n")
        (root / "usr/share/gone/deep").mkdir(parents=True)
        (root / "usr/share/gone/deep/file").write_text("gone\n")
        (root / "usr/kind").write_text("a file first\n")
        (root / "usr/lib").chmod(0o755)
    else:
        (root / "usr/bin/new-only").write_text("new\n")
        (root / "usr/share/added/deep").mkdir(parents=True)
        (root / "usr/share/added/deep/file").write_text("added\n")
        (root / "usr/kind").mkdir()
        (root / "usr/kind/inside").write_text("a directory now\n")
        (root / "usr/lib").chmod(0o700)
    return root


def test_patched_checkout_is_the_checkout(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE)
    first, second = (commit_dir(repo, make_tree(tmp_path / f"t{variant}", variant)) for variant in (1, 2))
    old, new = repo.load_commit(first), repo.load_commit(second)
    patched, fresh = tmp_path / "patched", tmp_path / "fresh"
    checkout_commit(repo, first, patched)
    unchanged_inode = (patched / "usr/share/pkg3").stat().st_ino
    assert patch_checkout(repo, patched, (old.root_tree, old.root_meta), (new.root_tree, new.root_meta))
    checkout_commit(repo, second, fresh)
    assert describe(patched) == describe(fresh)
    assert (patched / "usr/share/pkg3").stat().st_ino == unchanged_inode  # not rebuilt: only the differences


def test_too_different_is_refused_untouched(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "repo", RepoMode.BARE)
    commits = []
    for variant in (1, 2):
        root = tmp_path / f"t{variant}"
        (root / "many").mkdir(parents=True)
        for index in range(MAX_CHANGES + 1):
            (root / "many" / f"f{index}").write_text(f"{variant} {index}\n")
        commits.append(commit_dir(repo, root))
    target = tmp_path / "co"
    checkout_commit(repo, commits[0], target)
    before = describe(target)
    old, new = (repo.load_commit(c) for c in commits)
    assert not patch_checkout(repo, target, (old.root_tree, old.root_meta), (new.root_tree, new.root_meta))
    assert describe(target) == before


def test_replacing_staged_deployments_patches_the_spare(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    deploy_dir = sysroot.path / "ostree/deploy/stratos/deploy"
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)
    spare_inode = (deploy_dir / f"{OS2}.0").stat().st_ino
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS1)  # OS2.0 becomes the spare
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS1)  # OS1.2 patched from it: OS2 -> OS1
    new = deploy_dir / f"{OS1}.2"
    assert new.stat().st_ino == spare_inode
    fresh = sysroot.path.parent / "fresh"
    checkout_commit(sysroot.repo, OS1, fresh)
    patched = {k: v for k, v in describe(new).items() if k != "etc" and not k.startswith("etc/")}
    assert patched == describe(fresh)
    assert _etc_matches_usr_etc(new)
    assert [p.name[:6] for p in (sysroot.path / TRASH_DIR).iterdir()] == ["spare-"]  # OS1.1's tree now
    opened = Sysroot.open(sysroot.path)
    assert check_invariants(opened) == []
    staged = opened.staged_deployment()
    assert staged is not None and staged.name == f"{OS1}.2"
    out = admin(sysroot, "boot").stdout  # finalizes the patched deployment and empties the trash
    assert "Copying /etc changes" in out and not (sysroot.path / TRASH_DIR).exists()


def _etc_matches_usr_etc(deployment: Path) -> bool:
    etc = {k: v[:4] for k, v in describe(deployment / "etc").items()}
    return etc == {k: v[:4] for k, v in describe(deployment / "usr/etc").items()}


@pytest.mark.parametrize("edited", [False, True])
def test_spare_etc_is_kept_only_when_unchanged_and_untouched(sysroot: Sysroot, edited: bool) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    deploy_dir = sysroot.path / "ostree/deploy/stratos/deploy"
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)
    spare_etc = deploy_dir / f"{OS2}.0/etc"
    os.setxattr(spare_etc, "user.strata-probe", b"1")  # moves no mtime: there after a keep, gone after a copy
    if edited:  # someone changed the staged deployment's /etc: the next deployment must not inherit it
        (spare_etc / "app.conf").write_text("edited in the staged deployment\n")
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS1)  # OS2.0 becomes the spare
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)  # OS2.0 again, from it: the same usr/etc
    new = deploy_dir / f"{OS2}.0"
    assert ("user.strata-probe" in os.listxattr(new / "etc")) is not edited
    assert _etc_matches_usr_etc(new)
    assert (new / "etc/app.conf").read_bytes() == (new / "usr/etc/app.conf").read_bytes()
    assert check_invariants(Sysroot.open(sysroot.path)) == []
