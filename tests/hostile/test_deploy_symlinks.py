"""Deploying a tree whose symlinks point at the host (issue 9, item 4): nothing of the host may end up in
the deployment's /etc, in /boot or in the boot entry title, and the /etc merge may not write or delete
through a symlink of the new tree."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from strata.image.checkout import checkout_commit
from strata.image.commit import CommitRequest, commit_directory
from strata.sysroot.sysroot import Sysroot
from tests.hostile.labsys import (
    ORIGIN_REF,
    assert_repo_clean,
    booted_lab_sysroot,
    copy_tree,
    deployment_root,
    strata,
    sysroot_state,
)

SECRET = "HOST-SECRET-9f2c"
KERNEL_VERSION = "6.0.0-lab.x86_64"


@pytest.fixture(scope="module")
def pristine(lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return booted_lab_sysroot(lab_repo, tmp_path_factory.mktemp("pristine") / "sysroot")


@pytest.fixture
def sysroot(pristine: Path, tmp_path: Path) -> Path:
    return copy_tree(pristine, tmp_path / "sysroot")


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Host files an attacker would like to read or destroy."""
    marker = tmp_path / "host"
    (marker / "etc").mkdir(parents=True)
    (marker / "etc" / "secret.conf").write_text(f"{SECRET}\n")
    (marker / "etc" / "strata-lab.repo").write_text(f"{SECRET}\n")
    (marker / "modules" / KERNEL_VERSION).mkdir(parents=True)
    (marker / "modules" / KERNEL_VERSION / "vmlinuz").write_text(f"{SECRET} kernel\n")
    (marker / "os-release").write_text(f'PRETTY_NAME="{SECRET}"\n')
    return marker


def snapshot(top: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        found[rel] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return found


def hostile_commit(root: Path, tmp_path: Path, edit: Callable[[Path], None]) -> str:
    """The booted base with edit applied to its checkout, committed to the sysroot's repo as ref 'evil'."""
    repo = Sysroot.open(root).repo
    tree = tmp_path / "tree"
    base = repo.resolve_rev(ORIGIN_REF)
    assert base is not None
    checkout_commit(repo, base, tree)
    edit(tree)
    return commit_directory(repo, tree, "evil", CommitRequest(subject="hostile"))


def replace_by_symlink(path: Path, target: str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


def deploy_evil(root: Path) -> tuple[int, str]:
    proc = strata("admin", "deploy", "--sysroot", str(root), "--os=lab", "evil")
    return proc.returncode, proc.stderr.strip()


def boot_files_text(root: Path) -> str:
    """Everything /boot shows, symlinks to files followed (a kernel may be installed as a link)."""
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in (root / "boot").rglob("*") if p.is_file())


def test_usr_etc_symlink_to_a_host_directory_is_refused(sysroot: Path, host: Path, tmp_path: Path) -> None:
    hostile_commit(sysroot, tmp_path, lambda tree: replace_by_symlink(tree / "usr/etc", str(host / "etc")))
    before, host_before = sysroot_state(sysroot), snapshot(host)
    code, error = deploy_evil(sysroot)
    assert code != 0 and error == "error: the tree's /usr/etc is not a directory"
    assert sysroot_state(sysroot) == before
    assert snapshot(host) == host_before
    assert_repo_clean(sysroot / "ostree" / "repo")


@pytest.mark.parametrize("link", ["absolute", "dotdot"])
def test_kernel_symlinked_to_the_host_is_not_installed(sysroot: Path, host: Path, tmp_path: Path,
                                                        link: str) -> None:
    target = str(host / "modules")
    if link == "dotdot":
        target = "../../.." * 20 + target

    def edit(tree: Path) -> None:
        replace_by_symlink(tree / "usr/lib/modules", target)
    hostile_commit(sysroot, tmp_path, edit)
    before = sysroot_state(sysroot)
    code, error = deploy_evil(sysroot)
    assert code != 0 and error == "error: no kernel found in the tree (usr/lib/modules/VERSION/vmlinuz)"
    assert SECRET not in boot_files_text(sysroot)
    assert sysroot_state(sysroot) == before


def test_vmlinuz_symlinked_to_a_host_file_is_not_installed(sysroot: Path, host: Path, tmp_path: Path) -> None:
    def edit(tree: Path) -> None:
        for kernel in (tree / "usr/lib/modules").glob("*/vmlinuz"):
            replace_by_symlink(kernel, str(host / "modules" / KERNEL_VERSION / "vmlinuz"))
    hostile_commit(sysroot, tmp_path, edit)
    code, _error = deploy_evil(sysroot)
    assert code != 0
    assert SECRET not in boot_files_text(sysroot)


def test_os_release_symlink_does_not_put_host_content_in_the_title(sysroot: Path, host: Path,
                                                                   tmp_path: Path) -> None:
    hostile_commit(sysroot, tmp_path,
                   lambda tree: replace_by_symlink(tree / "usr/lib/os-release", str(host / "os-release")))
    code, error = deploy_evil(sysroot)
    assert code == 0, error
    entries = boot_files_text(sysroot)
    assert "title " in entries and SECRET not in entries


def test_etc_merge_never_writes_or_deletes_through_a_symlink(sysroot: Path, host: Path, tmp_path: Path) -> None:
    """The admin added /etc/strata-hostile/local.conf and deleted /etc/yum.repos.d/strata-lab.repo; the new
    tree makes both parent directories symlinks to a host directory."""
    etc = deployment_root(sysroot) / "etc"
    (etc / "strata-hostile").mkdir()
    (etc / "strata-hostile" / "local.conf").write_text("admin setting\n")
    (etc / "yum.repos.d" / "strata-lab.repo").unlink()
    host_before = snapshot(host)

    def edit(tree: Path) -> None:
        (tree / "usr/etc/strata-hostile").symlink_to(str(host / "etc"))
        replace_by_symlink(tree / "usr/etc/yum.repos.d", str(host / "etc"))
    hostile_commit(sysroot, tmp_path, edit)
    code, error = deploy_evil(sysroot)
    assert code == 0, error
    assert snapshot(host) == host_before
    new_etc = deployment_root(sysroot) / "etc"
    assert not (new_etc / "strata-hostile").is_symlink()
    assert (new_etc / "strata-hostile" / "local.conf").read_text() == "admin setting\n"
    assert sorted(p.name for p in (new_etc / "strata-hostile").iterdir()) == ["local.conf"]
    assert os.readlink(new_etc / "yum.repos.d") == str(host / "etc")  # the tree's own symlink, as shipped
