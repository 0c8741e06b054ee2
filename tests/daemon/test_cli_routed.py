"""The CLI as a client of the daemon (strata.cli.via_daemon): the lab verbs run with `--daemon-address` against
`strata daemon` on a private bus give the same sysroot as the same verbs in-process on a copy; status through
the daemon is the in-process status; `--pending-exit-77` and `-J` work either way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from strata.core.admin import boot
from strata.core.transaction import SilentProgress
from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab
from tests.daemon.bus import DaemonProcess

COMPARED = ("osname", "origin", "booted", "staged", "pinned", "packages", "requested-packages", "base-checksum",
            "version", "base-commit-meta")


def _strata(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=False)


def _ok(*args: str) -> str:
    proc = _strata(*args)
    assert proc.returncode == 0, f"strata {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _status(before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> dict[str, Any]:
    """`status --json` with global options BEFORE (the daemon's address) and verb options AFTER (--sysroot)."""
    data: dict[str, Any] = json.loads(_ok(*before, "status", "--json", *after))
    return data


def _comparable(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{key: d.get(key) for key in COMPARED} for d in data["deployments"]]


def _boot(*roots: Path) -> None:
    for root in roots:
        boot(Sysroot.open(root), SilentProgress())


def _kargs(root: Path) -> str:
    entries = sorted((root / "boot" / "loader" / "entries").glob("*.conf"))
    return "\n".join(line for entry in entries for line in entry.read_text().splitlines()
                     if line.startswith("options"))


def test_lab_verbs_through_the_daemon_equal_in_process(daemon: DaemonProcess, lab_sysroot: Lab,
                                                       tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(lab_sysroot.root, twin, symlinks=True)
    routed = ("--daemon-address", daemon.address)
    local = ("--sysroot", str(twin))

    assert _status(routed) == _status(after=("--sysroot", str(lab_sysroot.root)))

    out = _ok(*routed, "install", "htop")
    assert "Staging deployment... done" in out and "Added:\n  htop-3.2.2-2.x86_64" in out, out
    assert 'Changes queued for next boot. Run "strata admin boot --sysroot ' in out
    _ok("install", "htop", *local)
    assert _comparable(_status(routed)) == _comparable(_status(after=local))
    assert _strata(*routed, "status", "--pending-exit-77").returncode == 77
    again = _strata(*routed, "install", "htop")  # the daemon's error, one line
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "already requested" in again.stderr

    _boot(lab_sysroot.root, twin)
    assert _strata(*routed, "status", "--pending-exit-77").returncode == 0
    assert "No upgrade available." in _ok(*routed, "upgrade")

    quiet = _ok(*routed, "kargs", "--append=lab.routed=1", "-q")  # -q after the verb too, as rpm-ostree
    assert quiet.startswith("Kernel arguments updated.\nChanges queued for next boot.") and "Staging" not in quiet
    _ok("kargs", "--append=lab.routed=1", *local)
    assert json.loads(_ok(*routed, "status", "-J", "$.deployments[0].staged")) == [True]
    _boot(lab_sysroot.root, twin)
    assert "lab.routed=1" in _kargs(lab_sysroot.root) and _kargs(lab_sysroot.root) == _kargs(twin)

    out = _ok(*routed, "rollback")
    assert "strata admin boot --sysroot" in out, out
    _ok("rollback", *local)
    routed_status, local_status = _status(routed), _status(after=local)
    assert _comparable(routed_status) == _comparable(local_status)
    assert [d["booted"] for d in routed_status["deployments"]] == [False, True]
    assert json.loads(_ok(*routed, "status", "-J", "$.deployments[*].requested-packages")) == [["htop"], ["htop"]]


def test_routed_errors_and_in_process_fallback(daemon: DaemonProcess, lab_sysroot: Lab, tmp_path: Path) -> None:
    routed = ("--daemon-address", daemon.address)
    other = _strata(*routed, "status", "--sysroot", str(tmp_path))
    assert other.returncode == 1 and other.stderr.startswith("error: the daemon serves "), other.stderr
    assert _ok(*routed, "cancel") == "No active transaction.\n"  # nothing running here or in the daemon
    kargs = _ok(*routed, "kargs")  # a query: read in-process from the daemon's sysroot
    assert "rw" in kargs.split()

    booted = _status(routed)["deployments"][0]
    out = _ok(*routed, "rebase", booted["origin"], booted["checksum"], "--install", "htop", "-y")
    assert "Added:\n  htop-3.2.2-2.x86_64" in out, out  # UpdateDeployment: set-refspec + install-packages
    pending = _status(routed)["deployments"][0]
    assert pending["requested-packages"] == ["htop"] and pending["base-checksum"] == booted["checksum"]
    assert _strata(*routed, "deploy", booted["checksum"], "--unchanged-exit-77").returncode == 77

    rpm = next((lab_sysroot.distro / "lab" / "Packages").glob("nano-*.rpm"))
    out = _ok(*routed, "install", str(rpm))  # the file travels as a descriptor (install-local-packages)
    assert "\n  nano-7.2" in out, out
    assert _status(routed)["deployments"][0]["requested-local-packages"][0].startswith("nano-")
    assert list(daemon.runtime_dir.glob("local-packages-*")) == []  # the daemon's copies are gone
    _ok(*routed, "reset", "-l")  # UpdateDeployment no-layering alone: the layers go, the base stays
    pending = _status(routed)["deployments"][0]
    assert pending["requested-packages"] == [] and pending["requested-local-packages"] == []
    assert _strata(*routed, "reload").returncode == 0
    bad = _strata(*routed, "status", "-J", "$.deployments[?(@.booted)]")
    assert bad.returncode == 1 and "While compiling jsonpath" in bad.stderr


def test_passed_descriptor_must_be_a_regular_file(daemon: DaemonProcess) -> None:
    from gi.repository import GLib

    from strata.daemon import client as daemon_client
    bus = daemon_client.connect(daemon.address)
    modifiers = {"install-local-packages": GLib.Variant("ah", [0])}
    with open("/dev/null", "rb") as device:
        try:
            daemon_client.call_os(bus, None, "UpdateDeployment", GLib.Variant("(a{sv}a{sv})", (modifiers, {})),
                                  [device.fileno()])
            raise AssertionError("a character device was accepted as a package")
        except daemon_client.DaemonError as exc:
            assert "not a regular file" in str(exc)
    modifiers = {"install-local-packages": GLib.Variant("ah", [3])}
    try:
        daemon_client.call_os(bus, None, "UpdateDeployment", GLib.Variant("(a{sv}a{sv})", (modifiers, {})))
        raise AssertionError("an index without descriptors was accepted")
    except daemon_client.DaemonError as exc:
        assert "no file descriptors were passed" in str(exc)
