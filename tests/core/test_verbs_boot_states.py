"""States that last until the next (simulated) boot: a staged deployment locked against finalization and
released by finalize-deployment, and the transient writable /usr overlay of usroverlay/unlock."""

from __future__ import annotations

import os

from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, lab_sysroot

__all__ = ["lab_sysroot"]


def test_lock_finalization_and_finalize_deployment(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    booted = Sysroot.open(box.root).booted()
    assert booted is not None
    box.run("kargs", "--append=locked=1", "--lock-finalization")
    boot = box.admin("boot").stdout
    assert "Not finalizing" in boot
    sysroot = Sysroot.open(box.root)
    assert sysroot.booted() == booted and "locked=1" not in box.run("kargs").stdout
    assert sysroot.staged_deployment() is None

    box.run("kargs", "--append=locked=2", "--lock-finalization")
    wrong = box.run("finalize-deployment", "0" * 64, check=False)
    assert wrong.returncode == 1 and f"but found {booted.csum}" in wrong.stderr
    out = box.run("finalize-deployment", booted.csum).stdout
    assert "Booted" in out
    assert "locked=2" in box.run("kargs").stdout.split()
    unlocked = box.run("finalize-deployment", "--allow-missing-checksum", check=False)
    assert unlocked.returncode == 1 and "No pending staged deployment found" in unlocked.stderr



def test_usroverlay_is_writable_until_boot(lab_sysroot: Lab) -> None:
    box = lab_sysroot
    sysroot = Sysroot.open(box.root)
    booted = sysroot.booted()
    assert booted is not None
    usr = sysroot.deployment_dir(booted) / "usr"
    bash_inode = (usr / "bin" / "bash").stat().st_ino
    try:
        out = box.run("unlock").stdout  # the alias of usroverlay
        assert "A writable overlayfs is now mounted on /usr" in out and "strata admin boot --sysroot" in out
        assert sysroot.unlocked_state(booted) == "transient" and os.path.ismount(usr)
        assert "                 Unlocked: transient" in box.status()
        again = box.run("usroverlay", check=False)
        assert again.returncode == 1 and "already in unlocked state: transient" in again.stderr
        box.inside("sh", "-c", "echo hotfix > /usr/share/strata-hotfix")
        assert (usr / "share" / "strata-hotfix").read_text() == "hotfix\n"
        (usr / "bin" / "bash").write_bytes(b"overwritten")  # copied up: the object store keeps its file
    finally:
        box.admin("boot")
    assert not os.path.ismount(usr) and sysroot.unlocked_state(booted) == "none"
    assert not (usr / "share" / "strata-hotfix").exists()
    assert (usr / "bin" / "bash").stat().st_ino == bash_inode and (usr / "bin" / "bash").stat().st_size > 1000
