from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core import test_client
from tests.core.test_client import Lab
from tests.daemon.bus import DaemonProcess, PrivateBus, start_bus, start_daemon

lab_sysroot = test_client.lab_sysroot  # the lab sysroot of the client tests


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
