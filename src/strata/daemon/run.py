"""Start the service: connect to the bus (the system bus, or a private one by address), serve the objects,
own org.projectatomic.rpmostree1, run until idle (IdleExitTimeout) or SIGTERM."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from gi.repository import Gio, GLib

from strata.daemon.names import BUS_NAME
from strata.daemon.service import Daemon, DaemonState
from strata.errors import StrataError
from strata.sysroot.sysroot import Sysroot

PRIMARY_OWNER = 1
DO_NOT_QUEUE = 4
DEFAULT_RUNTIME_DIR = Path("/run/strata-daemon")


class BusNameTakenError(StrataError):
    """Another process owns the service's bus name."""


@dataclass(frozen=True)
class ServeOptions:
    sysroot: Path
    address: str | None = None  # None: the system bus
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    config: Path | None = None


def connect(address: str | None) -> Gio.DBusConnection:
    if address is None:
        return Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    return Gio.DBusConnection.new_for_address_sync(address, flags, None, None)


def own_name(bus: Gio.DBusConnection) -> None:
    reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
                          GLib.Variant("(su)", (BUS_NAME, DO_NOT_QUEUE)), GLib.VariantType("(u)"),
                          Gio.DBusCallFlags.NONE, -1, None)
    if reply.unpack()[0] != PRIMARY_OWNER:
        raise BusNameTakenError(f"{BUS_NAME} is already owned by another process")


def serve(options: ServeOptions) -> None:
    Sysroot.open(options.sysroot)  # refuse a directory that is no sysroot before taking the name
    try:
        bus = connect(options.address)
    except GLib.Error as exc:
        raise StrataError(f"cannot connect to the bus: {exc.message}") from None
    loop = GLib.MainLoop()
    options.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    state = DaemonState(options.sysroot.resolve(), options.runtime_dir, options.config)
    Daemon(bus, state, loop)
    own_name(bus)
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, _quit, loop)
    loop.run()
    bus.flush_sync(None)


def _quit(loop: GLib.MainLoop) -> bool:
    loop.quit()
    return False
