"""status after `install --apply-live` on the lab sysroot, as rpm-ostree prints it: the booted deployment shows
BootedCommit, LiveCommit and LiveDiff (aligned LiveAdded with -v), the pending deployment its Commit line
(shown whenever some deployment has live changes), and the JSON member live-replaced."""

from __future__ import annotations

import json

from tests.core.test_client import Lab, lab_sysroot  # noqa: F401  (the fixture)


def test_status_with_live_changes(lab_sysroot: Lab) -> None:  # noqa: F811
    box = lab_sysroot
    assert "Successfully updated running filesystem tree." in box.run("install", "--apply-live", "nano").stdout
    pending_block, booted_block = box.status().split("\n\n")
    assert "               BaseCommit: " in pending_block and "                   Commit: " in pending_block
    assert "                     Diff: 1 added" in pending_block
    assert "             BootedCommit: " in booted_block and "               LiveCommit: " in booted_block
    assert "                 LiveDiff: 1 added" in booted_block

    verbose = box.run("status", "-v").stdout
    assert "                LiveAdded: nano-7.2" in verbose and "                    Added: nano-7.2" in verbose
    assert "                   Staged: yes" in verbose and "(index: 1)" in verbose

    data = json.loads(box.run("status", "--json").stdout)
    pending, booted = data["deployments"]
    assert booted["booted"] and booted["live-replaced"] == pending["checksum"]
    assert pending["layered-commit-meta"]["rpmostree.clientlayer"] is True
    assert "rpmostree.packages" not in pending["layered-commit-meta"]  # promoted to "packages", as rpm-ostree
    assert pending["packages"] == ["nano"] and pending["base-commit-meta"]["version"] == "1"
    assert pending["initramfs-etc"] == [] and booted["initramfs-etc"] == []  # present when empty, as rpm-ostree
    assert json.loads(box.run("status", "-J", "$.deployments[1].live-replaced").stdout) == [pending["checksum"]]
    assert box.run("status", "--pending-exit-77", check=False).returncode == 77
