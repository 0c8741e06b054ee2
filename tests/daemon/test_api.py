"""rpm-ostree's D-Bus API served by `strata daemon` on a private bus, driven by a client written against
rpm-ostree's XML: properties, the transaction protocol, and the results compared with the in-process CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from gi.repository import GLib

from tests.core.test_client import Lab, strata
from tests.daemon.bus import DaemonProcess
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


def _status_json(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(strata("status", "--sysroot", str(root), "--json").stdout)
    return data


def test_properties(daemon: DaemonProcess, lab_sysroot: Lab) -> None:
    bus = connect(daemon.address)
    status = _status_json(lab_sysroot.root)
    deployments = status["deployments"]
    assert isinstance(deployments, list)
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "Path") == str(lab_sysroot.root.resolve())
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "Booted") == "/org/projectatomic/rpmostree1/lab"
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "ActiveTransaction") == ("", "", "")
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "AutomaticUpdatePolicy") == "none"
    served = get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "Deployments")
    assert [d["checksum"] for d in served] == [d["checksum"] for d in deployments]
    assert served[0]["booted"] is True and served[0]["osname"] == "lab" and served[0]["serial"] == 0
    path = os_path(bus)
    assert path == os_path(bus, "lab")
    assert get_property(bus, path, OS_IFACE, "Name") == "lab"
    booted = get_property(bus, path, OS_IFACE, "BootedDeployment")
    assert booted["id"] == deployments[0]["id"] and booted["origin"] == "lab:strata-lab/x86_64/base"
    assert get_property(bus, path, OS_IFACE, "RollbackDeployment") == {}
    try:
        os_path(bus, "nosuch")
        raise AssertionError("GetOS of a missing stateroot succeeded")
    except GLib.Error as exc:
        assert 'OS name "nosuch" not found' in exc.message


def test_introspection_with_busctl(daemon: DaemonProcess) -> None:
    out = subprocess.run(["busctl", f"--address={daemon.address}", "introspect", "org.projectatomic.rpmostree1",
                          "/org/projectatomic/rpmostree1/lab"], capture_output=True, text=True, check=True).stdout
    assert ".PkgChange" in out and "a{sv}asas" in out and ".KernelArgs" in out
    out = subprocess.run(["gdbus", "call", "--address", daemon.address, "--dest", "org.projectatomic.rpmostree1",
                          "--object-path", SYSROOT_PATH, "--method", "org.freedesktop.DBus.Properties.Get",
                          SYSROOT_IFACE, "Booted"], capture_output=True, text=True, check=True).stdout
    assert "/org/projectatomic/rpmostree1/lab" in out


def _comparable(status: dict[str, object]) -> list[dict[str, object]]:
    keep = ("osname", "origin", "booted", "staged", "packages", "requested-packages", "base-checksum", "version")
    deployments = status["deployments"]
    assert isinstance(deployments, list)
    return [{k: d.get(k) for k in keep} for d in deployments]


def test_pkgchange_equals_cli(daemon: DaemonProcess, lab_sysroot: Lab, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(lab_sysroot.root, twin, symlinks=True)
    bus = connect(daemon.address)
    address = call(bus, os_path(bus), OS_IFACE, "PkgChange", "(a{sv}asas)", ({}, ["htop"], []))[0]
    assert address.startswith("unix:path=")
    result = run_transaction(address)
    assert result.finished == (True, ""), result.signals
    assert result.names[-1] == "Finished" and result.names.count("Finished") == 1
    strata("install", "--sysroot", str(twin), "htop")
    assert _comparable(_status_json(lab_sysroot.root)) == _comparable(_status_json(twin))
    deployments = get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "Deployments")
    assert deployments[0]["requested-packages"] == ["htop"] and deployments[0]["staged"] is True
    diff = call(bus, os_path(bus), OS_IFACE, "GetDeploymentsRpmDiff", "(ss)",
                (deployments[1]["id"], deployments[0]["id"]))[0]
    added = {name: details for name, kind, details in diff if kind == 0}  # htop and its dependencies
    assert len(added) == len(diff) and added["htop"]["NewPackage"][0] == "htop"
    packages = call(bus, os_path(bus), OS_IFACE, "GetPackages", "(as)", (["bash", "nosuch"],))[0]
    assert [p["name"] for p in packages] == ["bash"]


def test_unknown_option_refused(daemon: DaemonProcess) -> None:
    bus = connect(daemon.address)
    try:
        call(bus, os_path(bus), OS_IFACE, "PkgChange", "(a{sv}asas)", ({"frobnicate": GLib.Variant("b", True)},
                                                                       ["htop"], []))
        raise AssertionError("an unknown option was accepted")
    except GLib.Error as exc:
        assert "unknown option 'frobnicate'" in exc.message
        assert "InvalidArgs" in exc.message


def test_client_module_renders_signals(daemon: DaemonProcess, lab_sysroot: Lab) -> None:
    from strata.core.transaction import LineProgress
    from strata.daemon import client as daemon_client

    lines: list[str] = []
    bus = daemon_client.connect(daemon.address)
    assert daemon_client.service_available(bus)
    params = GLib.Variant("(a{sv}asas)", ({}, ["htop"], []))
    daemon_client.follow(daemon_client.call_os(bus, None, "PkgChange", params)[0], LineProgress(lines.append))
    assert any(line.startswith("Will download: ") for line in lines), lines
    assert "LayeredPackages: htop" in strata("status", "--sysroot", str(lab_sysroot.root)).stdout
    try:
        daemon_client.follow(daemon_client.call_os(bus, None, "PkgChange", params)[0], LineProgress(lines.append))
        raise AssertionError("installing htop twice succeeded")
    except daemon_client.DaemonError as exc:
        assert "already requested" in str(exc)
