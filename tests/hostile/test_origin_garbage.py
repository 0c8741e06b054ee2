"""Origin files are the admin's, but may be damaged: random bytes give one-line errors, never a traceback, and
damage a transaction did not cause does not turn its completed change into a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strata.sysroot.sysroot import Sysroot
from tests.hostile.labsys import ORIGIN_REF, booted_lab_sysroot, strata

GARBAGE = bytes(range(256)) * 2


@pytest.fixture
def sysroot(lab_repo: Path, tmp_path: Path) -> Path:
    root = booted_lab_sysroot(lab_repo, tmp_path / "sysroot")
    # A second deployment, booted, so that the first becomes the rollback deployment.
    for args in (("admin", "deploy", "--os=lab", ORIGIN_REF), ("admin", "boot")):
        proc = strata(*args, "--sysroot", str(root))
        assert proc.returncode == 0, proc.stderr
    return root


def _origin_of(root: Path, index: int) -> Path:
    sysroot = Sysroot.open(root)
    return sysroot.origin_path(sysroot.deployments()[index])


def _assert_one_error_line(stderr: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr


def test_garbage_origin_of_the_booted_deployment(sysroot: Path) -> None:
    origin = _origin_of(sysroot, 0)
    origin.write_bytes(GARBAGE)
    before = sorted(os.listdir(origin.parent))

    status = strata("status", "--sysroot", str(sysroot))
    assert status.returncode != 0
    _assert_one_error_line(status.stderr)

    install = strata("install", "--sysroot", str(sysroot), "tree")
    assert install.returncode != 0
    _assert_one_error_line(install.stderr)
    assert sorted(os.listdir(origin.parent)) == before
    assert origin.read_bytes() == GARBAGE


def test_garbage_origin_of_the_rollback_deployment_does_not_fail_a_change(sysroot: Path) -> None:
    origin = _origin_of(sysroot, 1)
    origin.write_bytes(GARBAGE)

    install = strata("install", "--sysroot", str(sysroot), "tree")
    assert install.returncode == 0, install.stderr
    staged = Sysroot.open(sysroot).staged_deployment()
    assert staged is not None
    assert "tree" in Sysroot.open(sysroot).read_origin(staged).get_list("packages", "requested")
    assert origin.read_bytes() == GARBAGE
