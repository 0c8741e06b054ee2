"""A transaction killed at any point leaves a sysroot that boots into a complete deployment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strata.core.invariants import check_invariants
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF, run_ostree

CLIENT_POINTS = ["before-assemble", "after-resolve", "after-assemble", "after-checkout", "after-deploy"]
POINTS = ["after-checkout", "after-etc-merge", "after-kernels", "after-bootlinks", "before-loader-swap",
          "after-loader-swap", "after-subbootversion-swap", "cleanup-midway"]


def strata_admin(root: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return _strata(root, ["admin", *args], crash_at)


def strata_client(root: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return _strata(root, list(args), crash_at)


def _strata(root: Path, words: list[str], crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if crash_at:
        env["STRATA_CRASH_AT"] = crash_at
    verb = words[:2] if words[0] == "admin" else words[:1]
    rest = words[len(verb):]
    return subprocess.run([sys.executable, "-m", "strata.cli.main", *verb, "--sysroot", str(root), *rest],
                          capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def lab_sysroot_template(lab_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A booted sysroot with two deployments of the lab: the same commit deployed twice."""
    root = Sysroot.init_fs(tmp_path_factory.mktemp("crash") / "sysroot")
    root.os_init("lab")
    pull_local(Repo.open(lab_repo), root.repo, [LAB_REF], remote="lab")
    for _ in range(2):
        assert strata_admin(root.path, "deploy", "--os=lab", "--karg=rw", f"lab:{LAB_REF}").returncode == 0
    assert strata_admin(root.path, "boot").returncode == 0
    return root.path


def check_bootable(root: Path) -> None:
    sysroot = Sysroot.open(root)
    assert check_invariants(sysroot) == []
    listed = sysroot.deployments()
    assert listed, "no deployment left"
    for dep in listed:
        assert (sysroot.deployment_dir(dep) / "usr/bin/bash").exists()
        assert sysroot.origin_path(dep).exists()
    assert strata_admin(root, "boot").returncode == 0
    proc = strata_admin(root, "run", "--", "/usr/bin/bash", "-c", "echo booted-ok; test -f /etc/passwd")
    assert proc.returncode == 0 and "booted-ok" in proc.stdout, proc.stderr
    assert run_ostree("fsck", f"--repo={root / 'ostree/repo'}", check=False).returncode == 0
    assert subprocess.run([sys.executable, "-m", "strata.cli.main", "repo", "fsck", "--repo",
                           str(root / "ostree/repo")], capture_output=True, check=False).returncode == 0


def fresh_copy(template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "sysroot"
    subprocess.run(["cp", "-a", str(template), str(target)], check=True)
    return target


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("operation", [["deploy", "--os=lab", f"lab:{LAB_REF}"], ["rollback"],
                                       ["kargs", "--karg-append=crashtest"], ["undeploy", "1"]])
def test_killed_transaction_leaves_bootable_sysroot(lab_sysroot_template: Path, tmp_path: Path, point: str,
                                                   operation: list[str]) -> None:
    root = fresh_copy(lab_sysroot_template, tmp_path)
    proc = strata_admin(root, *operation, crash_at=point)
    assert proc.returncode in (0, -9), proc.stderr
    check_bootable(root)
    assert strata_admin(root, "cleanup").returncode == 0
    check_bootable(root)
    again = strata_admin(root, "deploy", "--os=lab", f"lab:{LAB_REF}")
    assert again.returncode == 0, again.stderr
    check_bootable(root)


@pytest.mark.parametrize("point", CLIENT_POINTS)
@pytest.mark.parametrize("operation", [["kargs", "--append=crashtest"], ["install", "test-noarch"]])
def test_killed_client_transaction_leaves_bootable_sysroot(lab_sysroot_template: Path, tmp_path: Path, point: str,
                                                          operation: list[str]) -> None:
    root = fresh_copy(lab_sysroot_template, tmp_path)
    proc = strata_client(root, *operation, crash_at=point)
    assert proc.returncode in (0, -9), proc.stderr
    check_bootable(root)
    status = strata_client(root, "status")
    assert status.returncode == 0 and status.stdout.startswith("State: idle\n"), status.stderr
    again = strata_client(root, *operation)
    assert again.returncode in (0, 1), again.stderr
    assert again.returncode == 0 or "already requested" in again.stderr
    check_bootable(root)
