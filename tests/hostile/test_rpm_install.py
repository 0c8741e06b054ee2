"""Hostile `.repo` files and local RPMs given to `strata install` on the lab's booted sysroot: one-line
refusals, the victim directory and the deployments unchanged."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, lab_sysroot  # noqa: F401 - the fixture is used by name
from tests.hostile import rpms as H


def booted_etc(box: Lab) -> Path:
    sysroot = Sysroot.open(box.root)
    booted = sysroot.booted()
    assert booted is not None
    return sysroot.deployment_dir(booted) / "etc"


def assert_refused(box: Lab, proc: subprocess.CompletedProcess[str], status_before: str, message: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert box.status() == status_before


def test_repo_section_naming_a_host_directory(lab_sysroot: Lab, tmp_path: Path) -> None:  # noqa: F811
    box = lab_sysroot
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep-me").write_text("precious\n")
    H.write_repo_file(booted_etc(box) / "yum.repos.d" / "evil.repo", str(victim), box.distro / "lab")
    before = box.status()
    proc = box.run("install", "nano", check=False)
    assert_refused(box, proc, before, "evil.repo: invalid repository id [")
    assert [p.name for p in victim.iterdir()] == ["keep-me"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: garbage(tmp), "garbage.rpm: not an RPM package (no RPM lead)"),
    (lambda tmp: tampered(tmp, H.corrupt_header), "package evil-1-1.x86_64.rpm: header digest mismatch"),
    (lambda tmp: tampered(tmp, lambda p: H.corrupt_payload(p, b"genuine", b"EVIL!!!")),
     "package evil-1-1.x86_64.rpm: payload digest mismatch"),
    (lambda tmp: tampered(tmp, lambda p: H.truncate(p, 500)), "evil-1-1.x86_64.rpm: not an RPM package (truncated"),
    (lambda tmp: H.build_hostile_rpm(tmp, "evil", files={H.LONG_NAME: b"x"}), "package evil: file name too long: "),
    (lambda tmp: H.build_hostile_rpm(tmp, "evil", files={H.TRAVERSAL_PATHS[0]: b"x"}),
     "package evil: payload path escapes the root"),
])
def test_hostile_local_rpm(lab_sysroot: Lab, tmp_path: Path, make: Callable[[Path], Path],  # noqa: F811
                           message: str) -> None:
    box = lab_sysroot
    before = box.status()
    proc = box.run("install", str(make(tmp_path)), check=False)
    assert_refused(box, proc, before, message)
    assert len(proc.stderr) < 400
    assert not Path("/tmp/strata-hostile-escape").exists()


def garbage(tmp: Path) -> Path:
    path = tmp / "garbage.rpm"
    path.write_bytes(bytes(range(256)) * 40)
    return path


def tampered(tmp: Path, tamper: Callable[[Path], None]) -> Path:
    rpm = H.build_hostile_rpm(tmp / "build", "evil", files={"/usr/bin/evil": b"genuine"}, compressed=False)
    target = tmp / rpm.name
    shutil.copy(rpm, target)
    tamper(target)
    return target
