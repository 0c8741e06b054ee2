"""Sysroot fixtures: the vector OS repo, a fresh sysroot with its stateroot, a tmpfs for the real ostree."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import untar

OS_REF = "strata/os/x86_64"
OS1 = "0c74777d07b5e37fa2cf2337a96657ce4b6ef8fdf0af014783d735d5a1d78458"
OS2 = "704bb9a452e848885d1fc7b7679486999e7aba3b359f0604fe7a8a1efb9ccfa6"


@pytest.fixture(scope="session")
def osrepo(tmp_path_factory: pytest.TempPathFactory, vectors: Path) -> Path:
    """The archive repo of vector (b): commits OS1 and OS2 (OS2 on the ref)."""
    return untar(vectors / "b/osrepo.tar", tmp_path_factory.mktemp("osrepo")) / "osrepo"


@pytest.fixture
def sysroot(tmp_path: Path, osrepo: Path) -> Sysroot:
    """An initialised sysroot with stateroot 'stratos' and both OS commits in its repo."""
    root = Sysroot.init_fs(tmp_path / "sysroot")
    root.os_init("stratos")
    pull_local(Repo.open(osrepo), root.repo, [OS_REF], remote="strata", depth=1)
    return root


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of our own: the only place the real `ostree admin deploy` may run (it freezes /boot's fs)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
