"""A small D-Bus client written against rpm-ostree's API (names and signatures of
org.projectatomic.rpmostree1), as Cockpit or zincati would use it: properties through proxies, a mutating
method, then the transaction protocol on the peer-to-peer address it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gi.repository import Gio, GLib

BUS_NAME = "org.projectatomic.rpmostree1"
SYSROOT_PATH = "/org/projectatomic/rpmostree1/Sysroot"
SYSROOT_IFACE = "org.projectatomic.rpmostree1.Sysroot"
OS_IFACE = "org.projectatomic.rpmostree1.OS"
TX_IFACE = "org.projectatomic.rpmostree1.Transaction"


def connect(address: str) -> Gio.DBusConnection:
    flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    return Gio.DBusConnection.new_for_address_sync(address, flags, None, None)


def call(bus: Gio.DBusConnection, path: str, iface: str, method: str, signature: str | None = None,
         args: tuple[Any, ...] = ()) -> Any:
    params = GLib.Variant(signature, args) if signature is not None else None
    reply = bus.call_sync(BUS_NAME, path, iface, method, params, None, Gio.DBusCallFlags.NONE, 600_000, None)
    return reply.unpack() if reply is not None else None


def get_property(bus: Gio.DBusConnection, path: str, iface: str, name: str) -> Any:
    return call(bus, path, "org.freedesktop.DBus.Properties", "Get", "(ss)", (iface, name))[0]


def os_path(bus: Gio.DBusConnection, name: str = "") -> str:
    return str(call(bus, SYSROOT_PATH, SYSROOT_IFACE, "GetOS", "(s)", (name,))[0])


@dataclass
class TransactionResult:
    signals: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> tuple[bool, str]:
        name, args = self.signals[-1]
        assert name == "Finished", self.signals
        return bool(args[0]), str(args[1])

    @property
    def names(self) -> list[str]:
        return [name for name, _args in self.signals]

    def messages(self) -> list[str]:
        return [str(args[0]) for name, args in self.signals if name == "Message"]


class TransactionWatch:
    """A peer-to-peer connection to a transaction address (no bus, no Hello), collecting its signals."""

    def __init__(self, address: str) -> None:
        self.connection = Gio.DBusConnection.new_for_address_sync(
            address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT, None, None)
        self.result = TransactionResult()
        self.context = GLib.MainContext.default()
        self.connection.signal_subscribe(None, TX_IFACE, None, "/", None, Gio.DBusSignalFlags.NONE,
                                         self._on_signal, None)

    def _on_signal(self, _conn: Any, _sender: Any, _path: str, _iface: str, name: str, params: GLib.Variant,
                   _data: Any) -> None:
        self.result.signals.append((name, params.unpack()))

    def call(self, method: str) -> Any:
        reply = self.connection.call_sync(None, "/", TX_IFACE, method, None, None, Gio.DBusCallFlags.NONE,
                                          60_000, None)
        return reply.unpack() if reply is not None else None

    def start(self) -> bool:
        return bool(self.call("Start")[0])

    def wait_for(self, name: str, timeout: float = 600.0) -> TransactionResult:
        deadline = GLib.get_monotonic_time() + int(timeout * 1e6)
        tick = GLib.timeout_add(100, lambda: True)  # wake up now and then to look at the deadline
        try:
            while name not in self.result.names:
                if GLib.get_monotonic_time() > deadline:
                    raise AssertionError(f"no {name} within {timeout}s: {self.result.signals}")
                self.context.iteration(True)
        finally:
            GLib.source_remove(tick)
        return self.result

    def close(self) -> None:
        self.connection.close_sync(None)


def run_transaction(address: str) -> TransactionResult:
    watch = TransactionWatch(address)
    try:
        assert watch.start()
        return watch.wait_for("Finished")
    finally:
        watch.close()
