"""Automatic updates through AutomaticUpdateTrigger: `none` does nothing, `check` caches the update in the
OS object's CachedUpdate without deploying, `stage` deploys it for the next boot; Reload re-reads the policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gi.repository import GLib

from strata.sysroot.sysroot import Sysroot
from tests.core.test_client import Lab, _compose_variant, json_packages, served_lab_sysroot
from tests.daemon.bus import DaemonProcess, PrivateBus, start_daemon
from tests.daemon.fleetlock_server import FleetLockServer
from tests.daemon.rpmostree_client import (
    OS_IFACE,
    SYSROOT_IFACE,
    SYSROOT_PATH,
    call,
    connect,
    get_property,
    os_path,
    run_transaction,
)


@pytest.fixture
def served(lab: Path, lab_repo: Path, tmp_path: Path) -> tuple[Lab, Path]:
    """A booted lab sysroot whose remote is a copy of the lab repository that the test can add commits to."""
    box, server = served_lab_sysroot(lab, lab_repo, tmp_path)
    return box, server


@pytest.fixture
def auto_daemon(private_bus: PrivateBus, served: tuple[Lab, Path], tmp_path: Path) -> Iterator[DaemonProcess]:
    process = start_daemon(private_bus.address, served[0].root, tmp_path / "daemon")
    yield process
    process.stop()


def _set_policy(daemon: DaemonProcess, bus: object, policy: str) -> None:
    (daemon.runtime_dir.parent / "rpm-ostreed.conf").write_text(
        f"[Daemon]\nIdleExitTimeout=0\nAutomaticUpdatePolicy={policy}\n")
    strata_env({}, "--daemon-address", daemon.address, "reload")  # the CLI's reload is Sysroot.Reload
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "AutomaticUpdatePolicy") == policy  # type: ignore[arg-type]


def _trigger(bus: object, path: str) -> tuple[bool, str]:
    enabled, address = call(bus, path, OS_IFACE, "AutomaticUpdateTrigger", "(a{sv})", ({},))  # type: ignore[arg-type]
    return bool(enabled), str(address)


def test_none_check_stage(auto_daemon: DaemonProcess, served: tuple[Lab, Path], lab: Path,
                          tmp_path: Path) -> None:
    box, server = served
    bus = connect(auto_daemon.address)
    path = os_path(bus)
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "AutomaticUpdatePolicy") == "none"
    assert _trigger(bus, path) == (False, "")

    new = _compose_variant(lab, server, tmp_path, "v2", packages=[*json_packages(lab), "htop"])
    before = [d.key for d in Sysroot.open(box.root).deployments()]
    _set_policy(auto_daemon, bus, "check")
    enabled, address = _trigger(bus, path)
    assert enabled and run_transaction(address).finished == (True, "")
    cached = get_property(bus, path, OS_IFACE, "CachedUpdate")
    assert cached["checksum"] == new and cached["version"] == "1.1" and cached["osname"] == "lab"
    assert get_property(bus, path, OS_IFACE, "HasCachedUpdateRpmDiff") is True
    assert [d.key for d in Sysroot.open(box.root).deployments()] == before
    assert cached["rpm-diff"]["added"][0][1] == "htop"
    _check_status_shows_update(auto_daemon, box, new)

    _set_policy(auto_daemon, bus, "stage")  # the timer's command, routed: AutomaticUpdateTrigger
    out = strata_env({}, "--daemon-address", auto_daemon.address, "upgrade", "--trigger-automatic-update-policy")
    assert "Update staged." in out.stdout, out.stdout
    deployments = Sysroot.open(box.root).deployments()
    assert deployments[0].staged and deployments[0].csum == new
    assert get_property(bus, path, OS_IFACE, "CachedUpdate") == {}


def _check_status_shows_update(daemon: DaemonProcess, box: Lab, new: str) -> None:
    """status, in-process (reading the same configuration) and through the daemon: the policy line, the
    AvailableUpdate block with its package diff, and the JSON cached-update."""
    config = {"STRATA_DAEMON_CONFIG": str(daemon.runtime_dir.parent / "rpm-ostreed.conf")}
    in_process = strata_env(config, "status", "--sysroot", str(box.root)).stdout
    routed = strata_env({}, "--daemon-address", daemon.address, "status").stdout
    for text in (in_process, routed):
        assert "\nAutomaticUpdates: check; strata-automatic.timer: unknown state\n" in text, text
        block = text.split("\n\nAvailableUpdate:\n")[1]
        assert block.startswith("        Version: 1.1 (") and f"         Commit: {new}\n" in block, block
        assert "           Diff: 3 added" in block, block
    data = json.loads(strata_env({}, "--daemon-address", daemon.address, "status", "--json").stdout)
    update = data["cached-update"]
    assert update["checksum"] == new and update["version"] == "1.1"
    assert sorted(item[1] for item in update["rpm-diff"]["added"]) == ["htop", "libnl-3-200", "libnl-genl-3-200"]
    assert update["rpm-diff"]["added"][0][0] == 0 and update["rpm-diff"]["upgraded"] == []


def strata_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_apply_takes_and_releases_a_fleetlock_slot(auto_daemon: DaemonProcess, served: tuple[Lab, Path],
                                                   lab: Path, tmp_path: Path) -> None:
    box, server = served
    fleetlock = FleetLockServer()
    try:
        fleetlock.state.holders["workers"] = "other-node"
        (auto_daemon.runtime_dir.parent / "rpm-ostreed.conf").write_text(
            "[Daemon]\nIdleExitTimeout=0\nAutomaticUpdatePolicy=apply\n"
            f"[FleetLock]\nURL={fleetlock.url}\nGroup=workers\nID=node-1\n")
        bus = connect(auto_daemon.address)
        call(bus, SYSROOT_PATH, SYSROOT_IFACE, "Reload")
        path = os_path(bus)
        old = Sysroot.open(box.root).booted()
        assert old is not None
        new = _compose_variant(lab, server, tmp_path, "v2", packages=[*json_packages(lab), "htop"])

        enabled, address = _trigger(bus, path)  # the slot is held by another node: staged, no reboot
        result = run_transaction(address)
        assert enabled and result.finished == (True, "")
        assert any("Reboot slot not granted" in m for m in result.messages()), result.messages()
        sysroot = Sysroot.open(box.root)
        assert sysroot.deployments()[0].staged and sysroot.deployments()[0].csum == new
        assert sysroot.booted() == old

        del fleetlock.state.holders["workers"]  # the other node is done: the slot is free
        result = run_transaction(_trigger(bus, path)[1])
        assert result.finished == (True, ""), result.signals
        booted = Sysroot.open(box.root).booted()
        assert booted is not None and booted.csum == new
        assert [s.path for s in fleetlock.state.seen] == ["/v1/pre-reboot", "/v1/pre-reboot", "/v1/steady-state"]
        assert all(s.protocol_header == "true" for s in fleetlock.state.seen)
        assert fleetlock.state.seen[-1].body == {"client_params": {"id": "node-1", "group": "workers"}}
        assert fleetlock.state.holders == {}
    finally:
        fleetlock.stop()


def test_upgrade_and_deploy_methods(auto_daemon: DaemonProcess, served: tuple[Lab, Path], lab: Path,
                                    tmp_path: Path) -> None:
    server = served[1]
    bus = connect(auto_daemon.address)
    path = os_path(bus)
    result = run_transaction(call(bus, path, OS_IFACE, "Upgrade", "(a{sv})", ({},))[0])
    assert result.finished == (True, "") and "No upgrade available." in result.messages()
    new = _compose_variant(lab, server, tmp_path, "v2", packages=[*json_packages(lab), "htop"])
    assert run_transaction(call(bus, path, OS_IFACE, "Upgrade", "(a{sv})", ({},))[0]).finished == (True, "")
    default = get_property(bus, path, OS_IFACE, "DefaultDeployment")
    assert default["checksum"] == new and default["staged"] is True and default["version"] == "1.1"
    reboot = {"reboot": GLib.Variant("b", True)}
    result = run_transaction(call(bus, path, OS_IFACE, "Deploy", "(sa{sv})", ("1", reboot))[0])
    assert result.finished == (True, ""), result.signals
    booted = get_property(bus, path, OS_IFACE, "BootedDeployment")
    assert booted["version"] == "1" and booted["checksum"] != new
