"""The transaction protocol end to end: signals in order and Finished last, Rollback and KernelArgs, one
transaction at a time ("Transaction in progress"), and Cancel leaving the sysroot as it was."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gi.repository import GLib

from strata.sysroot.sysroot import Sysroot
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
    run_transaction,
)


def _status(root: Path) -> str:
    return strata("status", "--sysroot", str(root)).stdout


def _install(bus: object, packages: list[str]) -> str:
    return str(call(bus, os_path(bus), OS_IFACE, "PkgChange", "(a{sv}asas)", ({}, packages, []))[0])  # type: ignore[arg-type]


def test_signals_rollback_and_kargs(daemon: DaemonProcess, lab_sysroot: Lab) -> None:
    bus = connect(daemon.address)
    result = run_transaction(_install(bus, ["htop"]))
    assert result.finished == (True, "")
    assert "Message" in result.names and result.names[-1] == "Finished"
    assert any(text.startswith("Will download: ") for text in result.messages()), result.messages()

    path = os_path(bus)
    address = call(bus, path, OS_IFACE, "KernelArgs", "(sasasasa{sv})", ("", ["quiet"], [], [], {}))[0]
    assert run_transaction(address).finished == (True, "")
    default = get_property(bus, path, OS_IFACE, "DefaultDeployment")
    sysroot = Sysroot.open(lab_sysroot.root)
    assert "quiet" in sysroot.deployments()[0].kargs
    assert default["requested-packages"] == ["htop"]

    lab_sysroot.admin("boot")  # the staged deployment becomes the booted one; the old one is the rollback
    before = Sysroot.open(lab_sysroot.root).deployments()
    assert get_property(bus, path, OS_IFACE, "RollbackDeployment")["checksum"] == before[1].csum
    address = call(bus, path, OS_IFACE, "Rollback", "(a{sv})", ({},))[0]
    assert run_transaction(address).finished == (True, "")
    after = Sysroot.open(lab_sysroot.root).deployments()
    assert [d.key for d in after] == [before[1].key, before[0].key]


def test_failed_transaction_reports_finished_false(daemon: DaemonProcess) -> None:
    bus = connect(daemon.address)
    result = run_transaction(call(bus, os_path(bus), OS_IFACE, "PkgChange", "(a{sv}asas)", ({}, [], ["htop"]))[0])
    success, error = result.finished
    assert not success and "not currently requested" in error


@pytest.fixture(params=["before-assemble", "after-resolve"])  # before the downloads; packages resolved and fetched
def paused_daemon(request: pytest.FixtureRequest, private_bus: PrivateBus, lab_sysroot: Lab,
                  tmp_path: Path) -> Iterator[DaemonProcess]:
    env = {"STRATA_PAUSE_AT": request.param, "STRATA_PAUSE_SECONDS": "120"}
    process = start_daemon(private_bus.address, lab_sysroot.root, tmp_path / "daemon", env=env)
    yield process
    process.stop()


def _wait_busy(bus: object, root: Path) -> None:
    deadline = time.monotonic() + 60
    while "State: busy" not in _status(root):
        assert time.monotonic() < deadline, "the transaction never became busy"
        time.sleep(0.2)


def test_second_caller_refused_and_cancel(paused_daemon: DaemonProcess, lab_sysroot: Lab) -> None:
    root = lab_sysroot.root
    before = _status(root)
    before_json = json.loads(strata("status", "--sysroot", str(root), "--json").stdout)
    bus = connect(paused_daemon.address)
    watch = TransactionWatch(_install(bus, ["htop"]))
    assert watch.start()
    assert watch.start() is False  # a second Start joins the running transaction
    _wait_busy(bus, root)
    active = get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "ActiveTransaction")
    assert active[0] == "PkgChange" and active[2] == "/org/projectatomic/rpmostree1/lab"
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "ActiveTransactionPath").startswith("unix:path=")

    other = connect(paused_daemon.address)
    with pytest.raises(GLib.Error) as refused:
        _install(other, ["nano"])
    assert "Transaction in progress: install htop" in refused.value.message

    watch.call("Cancel")
    result = watch.wait_for("Finished", timeout=60)
    assert result.finished == (False, "Transaction cancelled")
    watch.close()
    assert _status(root) == before
    assert json.loads(strata("status", "--sysroot", str(root), "--json").stdout) == before_json
    strata("repo", "fsck", "--repo", str(root / "ostree" / "repo"))
    assert get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, "ActiveTransaction") == ("", "", "")
