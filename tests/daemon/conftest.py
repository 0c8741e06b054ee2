from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core import test_client
from tests.core.test_client import Lab
from tests.daemon.bus import DaemonProcess, PrivateBus, start_bus, start_daemon

lab_sysroot = test_client.lab_sysroot  # the lab sysroot of the client tests

# The service needs GLib's GDBus (PyGObject) and a dbus-daemon; until the set-up installs them everywhere,
# a machine without them skips these tests' collection instead of failing it.
REQUIREMENTS_MISSING = importlib.util.find_spec("gi") is None or shutil.which("dbus-daemon") is None
collect_ignore_glob = ["test_*.py"] if REQUIREMENTS_MISSING else []


@pytest.fixture
def private_bus(tmp_path: Path) -> Iterator[PrivateBus]:
    bus = start_bus(tmp_path / "bus")
    yield bus
    bus.stop()


@pytest.fixture
def daemon(private_bus: PrivateBus, lab_sysroot: Lab, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = start_daemon(private_bus.address, lab_sysroot.root, tmp_path / "daemon")
    yield process
    process.stop()
