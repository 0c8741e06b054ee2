"""A private system-like bus for the daemon tests: a real dbus-daemon with a configuration written here
(default deny, as the system bus), the daemon's own policy file included, and `strata daemon` on it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{daemon_policy}</include>
  {extra}
</busconfig>
"""


def daemon_policy_file() -> Path:
    return Path(str(resources.files("strata.daemon").joinpath("data/org.projectatomic.rpmostree1.conf")))


@dataclass
class PrivateBus:
    address: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_bus(workdir: Path, extra: str = "") -> PrivateBus:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    socket = workdir / "system_bus_socket"
    config = workdir / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket, daemon_policy=daemon_policy_file(), extra=extra))
    process = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    address = process.stdout.readline().decode().strip()
    if not address:
        raise AssertionError("dbus-daemon did not start")
    return PrivateBus(address, process)


def bus_names(address: str) -> list[str]:
    out = subprocess.run(["busctl", f"--address={address}", "list", "--acquired", "--no-legend"],
                         capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@dataclass
class DaemonProcess:
    process: subprocess.Popen[str]
    address: str
    runtime_dir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_daemon(address: str, sysroot: Path, workdir: Path, config: Path | None = None,
                 env: dict[str, str] | None = None) -> DaemonProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    runtime_dir = workdir / "run"
    config = config or workdir / "rpm-ostreed.conf"
    if not config.exists():
        config.write_text("[Daemon]\nIdleExitTimeout=0\n")
    argv = [sys.executable, "-m", "strata.cli.main", "daemon", "--sysroot", str(sysroot), "--address", address,
            "--runtime-dir", str(runtime_dir), "--config", str(config)]
    process = subprocess.Popen(argv, text=True, env={**os.environ, "STRATA_DEBUG": "1", **(env or {})})
    deadline = time.monotonic() + 30
    while "org.projectatomic.rpmostree1" not in bus_names(address):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"strata daemon did not take its name (exit {process.poll()})")
        time.sleep(0.1)
    return DaemonProcess(process, address, runtime_dir)
