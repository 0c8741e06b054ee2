"""A replaced staged deployment leaves its stateroot by one rename into the trash; the next cleanup deletes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from strata.core.invariants import check_invariants
from strata.sysroot.sysroot import TRASH_DIR, Sysroot
from tests.conftest import run_ostree
from tests.sysroot.conftest import OS1, OS2
from tests.sysroot.test_sysroot import admin


def _deploy_dir(sysroot: Sysroot) -> Path:
    return sysroot.path / "ostree/deploy/stratos/deploy"


def _staged_twice(sysroot: Sysroot, *, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """OS1 booted, OS2 staged, then OS1 staged again over it (the second stage's process, killed or not)."""
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)
    env = dict(os.environ, **({"STRATA_CRASH_AT": crash_at} if crash_at else {}))
    return subprocess.run([sys.executable, "-m", "strata.cli.main", "admin", "deploy", "--sysroot",
                           str(sysroot.path), "--os=stratos", "--stage", OS1], capture_output=True, text=True,
                          env=env, check=False)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_replaced_staged_deployment_goes_to_the_trash(sysroot: Sysroot) -> None:
    assert _staged_twice(sysroot).returncode == 0
    assert _names(_deploy_dir(sysroot)) == [f"{OS1}.0", f"{OS1}.0.origin", f"{OS1}.1", f"{OS1}.1.origin"]
    trashed = _names(sysroot.path / TRASH_DIR)
    assert len(trashed) == 1 and trashed[0].startswith(f"spare-{OS2}-")
    assert (sysroot.path / TRASH_DIR / trashed[0] / "usr").is_dir()
    staged = Sysroot.open(sysroot.path).staged_deployment()
    assert staged is not None and staged.name == f"{OS1}.1"
    assert check_invariants(Sysroot.open(sysroot.path)) == []
    assert Sysroot.open(sysroot.path).stateroots() == ["stratos"]
    assert run_ostree("admin", "status", f"--sysroot={sysroot.path}").returncode == 0
    assert run_ostree("admin", "cleanup", f"--sysroot={sysroot.path}").returncode == 0  # ostree tolerates it


@pytest.mark.parametrize("empty_by", [["cleanup"], ["boot"]])
def test_cleanup_and_finalization_empty_the_trash(sysroot: Sysroot, empty_by: list[str]) -> None:
    assert _staged_twice(sysroot).returncode == 0
    admin(sysroot, *empty_by)
    assert not (sysroot.path / TRASH_DIR).exists()
    assert _names(sysroot.path / "ostree/deploy") == ["stratos"]
    assert check_invariants(Sysroot.open(sysroot.path)) == []


def test_killed_before_the_trash_leaves_an_unlisted_tree_that_cleanup_removes(sysroot: Sysroot) -> None:
    proc = _staged_twice(sysroot, crash_at="before-trash-staged")
    assert proc.returncode == -9, proc.stderr
    opened = Sysroot.open(sysroot.path)
    assert check_invariants(opened) == []
    assert [d.name for d in opened.deployments()] == [f"{OS1}.1", f"{OS1}.0"]
    assert f"{OS2}.0" in _names(_deploy_dir(sysroot))  # the new staged state is written: the old tree is scrap
    admin(sysroot, "cleanup")
    assert _names(_deploy_dir(sysroot)) == [f"{OS1}.0", f"{OS1}.0.origin", f"{OS1}.1", f"{OS1}.1.origin"]
    assert check_invariants(Sysroot.open(sysroot.path)) == []


def test_immutable_deployment_root_is_trashed(sysroot: Sysroot) -> None:
    admin(sysroot, "deploy", "--os=stratos", OS1)
    admin(sysroot, "boot")
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS2)
    root = _deploy_dir(sysroot) / f"{OS2}.0"
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(root)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    admin(sysroot, "deploy", "--os=stratos", "--stage", OS1)
    assert not root.exists()
    admin(sysroot, "cleanup")
    assert not (sysroot.path / TRASH_DIR).exists()
