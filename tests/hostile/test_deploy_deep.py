"""A tree with a 3,000-level directory chain (issue 9, item 9, the sysroot side): deploying it and removing
the deployment again work, without recursion and without paths longer than PATH_MAX."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_ostree
from tests.hostile.labsys import ORIGIN_REF, booted_lab_sysroot, deployment_root, strata, sysroot_state

DEPTH = 3000


def make_chain(top: Path, depth: int) -> None:
    """top/d/d/.../d/bottom, depth directories deep, made relative to directory fds (the full path is far
    longer than PATH_MAX)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("bottom of the chain\n")
    finally:
        os.close(fd)


def read_bottom(top: Path, depth: int) -> str:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("bottom", os.O_RDONLY, dir_fd=fd)) as f:
            return f.read()
    finally:
        os.close(fd)


@pytest.fixture
def sysroot(lab_repo: Path, tmp_path: Path) -> Path:
    return booted_lab_sysroot(lab_repo, tmp_path / "sysroot")


def test_deep_chain_deploys_and_undeploys(sysroot: Path, tmp_path: Path) -> None:
    repo = sysroot / "ostree" / "repo"
    tree = tmp_path / "tree"
    base = run_ostree(f"--repo={repo}", "rev-parse", ORIGIN_REF).stdout.strip()
    run_ostree(f"--repo={repo}", "checkout", "-H", base, str(tree))
    make_chain(tree / "usr/share/deep", DEPTH)
    run_ostree(f"--repo={repo}", "commit", "-b", "deep", f"--tree=dir={tree}", "--link-checkout-speedup")

    deployed = strata("admin", "deploy", "--sysroot", str(sysroot), "--os=lab", "deep")
    assert deployed.returncode == 0, deployed.stderr
    new = deployment_root(sysroot, 0)
    assert read_bottom(new / "usr/share/deep", DEPTH) == "bottom of the chain\n"

    removed = strata("admin", "undeploy", "--sysroot", str(sysroot), "0")
    assert removed.returncode == 0, removed.stderr
    assert not new.exists()


def test_deep_chain_in_etc_is_refused_by_the_next_merge_in_one_line(sysroot: Path, tmp_path: Path) -> None:
    """The /etc merge works on paths: a chain longer than PATH_MAX in the booted /etc stops the next deploy
    with one line, and nothing changes."""
    repo = sysroot / "ostree" / "repo"
    tree = tmp_path / "tree"
    base = run_ostree(f"--repo={repo}", "rev-parse", ORIGIN_REF).stdout.strip()
    run_ostree(f"--repo={repo}", "checkout", "-H", base, str(tree))
    make_chain(tree / "usr/etc/deep", DEPTH)
    run_ostree(f"--repo={repo}", "commit", "-b", "deep-etc", f"--tree=dir={tree}", "--link-checkout-speedup")
    for args in (("deploy", "--os=lab", "deep-etc"), ("boot",)):
        proc = strata("admin", args[0], "--sysroot", str(sysroot), *args[1:])
        assert proc.returncode == 0, proc.stderr
    before = sysroot_state(sysroot)
    again = strata("admin", "deploy", "--sysroot", str(sysroot), "--os=lab", ORIGIN_REF)
    assert again.returncode != 0 and again.stderr == "error: /etc merge: a path in /etc is longer than PATH_MAX\n"
    assert sysroot_state(sysroot) == before
