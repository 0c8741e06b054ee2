"""The service's lifetime and files: idle exit unless a client is registered, one owner of the bus name,
`strata cancel` and a vanished client during a daemon transaction, and the shipped policy/unit files."""

from __future__ import annotations

import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from strata.daemon.authority import ACTION_PREFIX, METHOD_ACTIONS, MODIFIER_ACTIONS
from tests.core.test_client import Lab, strata
from tests.daemon.bus import DaemonProcess, PrivateBus, start_daemon
from tests.daemon.rpmostree_client import (
    OS_IFACE,
    SYSROOT_IFACE,
    SYSROOT_PATH,
    TransactionWatch,
    call,
    connect,
    get_property,
    os_path,
)


def _data(name: str) -> str:
    return resources.files("strata.daemon").joinpath(f"data/{name}").read_text()


def test_shipped_files_agree() -> None:
    policy = _data("org.projectatomic.rpmostree1.policy")
    for action in {*METHOD_ACTIONS.values(), *MODIFIER_ACTIONS.values()}:
        assert f'<action id="{ACTION_PREFIX}{action}">' in policy, action
    assert "BusName=org.projectatomic.rpmostree1" in _data("strata-daemon.service")
    assert "SystemdService=strata-daemon.service" in _data("org.projectatomic.rpmostree1.service")
    assert "OnUnitInactiveSec=1d" in _data("strata-automatic.timer")
    assert '<allow own="org.projectatomic.rpmostree1"/>' in _data("org.projectatomic.rpmostree1.conf")


def test_idle_exit_and_registered_clients(private_bus: PrivateBus, lab_sysroot: Lab, tmp_path: Path) -> None:
    config = tmp_path / "idle.conf"
    config.write_text("[Daemon]\nIdleExitTimeout=2\n")
    daemon = start_daemon(private_bus.address, lab_sysroot.root, tmp_path / "daemon", config=config)
    bus = connect(private_bus.address)
    call(bus, SYSROOT_PATH, SYSROOT_IFACE, "RegisterClient", "(a{sv})", ({},))
    time.sleep(4)
    assert daemon.process.poll() is None, "the daemon exited with a registered client"
    call(bus, SYSROOT_PATH, SYSROOT_IFACE, "UnregisterClient", "(a{sv})", ({},))
    assert daemon.process.wait(timeout=10) == 0


def test_bus_name_has_one_owner(daemon: DaemonProcess, lab_sysroot: Lab, tmp_path: Path) -> None:
    second = subprocess.run([sys.executable, "-m", "strata.cli.main", "daemon", "--sysroot", str(lab_sysroot.root),
                             "--address", daemon.address, "--runtime-dir", str(tmp_path / "run2")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 1
    assert "org.projectatomic.rpmostree1 is already owned by another process" in second.stderr


def test_strata_cancel_after_client_vanished(private_bus: PrivateBus, lab_sysroot: Lab, tmp_path: Path) -> None:
    root = lab_sysroot.root
    before = strata("status", "--sysroot", str(root)).stdout
    env = {"STRATA_PAUSE_AT": "before-assemble", "STRATA_PAUSE_SECONDS": "120"}
    daemon = start_daemon(private_bus.address, root, tmp_path / "daemon", env=env)
    try:
        bus = connect(private_bus.address)
        address = call(bus, os_path(bus), OS_IFACE, "PkgChange", "(a{sv}asas)", ({}, ["htop"], []))[0]
        watch = TransactionWatch(address)
        assert watch.start()
        watch.close()  # the client goes away; the transaction goes on
        deadline = time.monotonic() + 60
        while "State: busy" not in strata("status", "--sysroot", str(root)).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "Cancelled transaction: install htop" in strata("cancel", "--sysroot", str(root)).stdout
        deadline = time.monotonic() + 30
        while get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "ActiveTransaction") != ("", "", ""):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert strata("status", "--sysroot", str(root)).stdout == before
    finally:
        daemon.stop()
