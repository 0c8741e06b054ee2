"""A booted lab sysroot to attack, and what must not change when an attack is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF, run_ostree

ORIGIN_REF = f"lab:{LAB_REF}"


def strata(*args: str, env: Mapping[str, str] | None = None, timeout: float = 600
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=False, env=dict(env) if env is not None else None, timeout=timeout)


def booted_lab_sysroot(lab_repo: Path, dest: Path) -> Path:
    """A sysroot with the lab base deployed and booted (origin lab:LAB_REF)."""
    root = Sysroot.init_fs(dest)
    root.os_init("lab")
    pull_local(Repo.open(lab_repo), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{lab_repo}")
    root.repo.save_config()
    for args in (("deploy", "--os=lab", "--karg=rw", ORIGIN_REF), ("boot",)):
        proc = strata("admin", args[0], "--sysroot", str(dest), *args[1:])
        assert proc.returncode == 0, proc.stderr
    return dest


def copy_tree(source: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest


@dataclass(frozen=True)
class SysrootState:
    """The visible state of a sysroot: deployment list, boot entries, refs (the package cache's aside:
    importing a local RPM caches it before the transaction starts, as rpm-ostree does)."""

    status: object
    entries: dict[str, bytes]
    refs: str


def sysroot_state(root: Path) -> SysrootState:
    status = strata("status", "--sysroot", str(root), "--json")
    assert status.returncode == 0, status.stderr
    entries_dir = root / "boot" / "loader" / "entries"
    entries = {p.name: p.read_bytes() for p in sorted(entries_dir.iterdir())}
    refs = strata("repo", "refs", "--repo", str(root / "ostree" / "repo")).stdout.splitlines()
    kept = "\n".join(ref for ref in refs if not ref.startswith("rpmostree/pkg/"))
    return SysrootState(json.loads(status.stdout), entries, kept)


def assert_repo_clean(repo: Path) -> None:
    """Both fscks, strata's and the real ostree's, find nothing wrong."""
    ours = strata("repo", "fsck", "--repo", str(repo))
    assert ours.returncode == 0 and "no errors found" in ours.stdout, ours.stdout + ours.stderr
    theirs = run_ostree("fsck", f"--repo={repo}", check=False)
    assert theirs.returncode == 0 and "no errors found" in theirs.stdout, theirs.stdout + theirs.stderr


def deployment_root(root: Path, index: int = 0) -> Path:
    sysroot = Sysroot.open(root)
    return sysroot.deployment_dir(sysroot.deployments()[index])
