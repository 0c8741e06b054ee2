"""The client side of the service, for the CLI on a booted system: is the daemon there, call an OS method,
follow the transaction it returns and hand its signals to a `Progress` (the same one the in-process engine
reports to, so the CLI renders both the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

from strata.core.client import Outcome, package_diff
from strata.core.transaction import Progress
from strata.daemon.names import BUS_NAME, OS_IFACE, SYSROOT_IFACE, SYSROOT_PATH, TX_IFACE
from strata.errors import StrataError
from strata.sysroot.sysroot import Deployment, Sysroot

CALL_TIMEOUT_MS = 600_000


class DaemonError(StrataError):
    """The daemon refused a call or a transaction failed."""


def connect(address: str | None = None) -> Gio.DBusConnection:
    """The system bus, or the bus at ADDRESS."""
    try:
        if address is None:
            return Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
        flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
        return Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
    except GLib.Error as exc:
        raise DaemonError(f"cannot connect to the bus: {exc.message}") from None


def service_available(bus: Gio.DBusConnection) -> bool:
    """Whether the service runs or can be activated on this bus."""
    reply = _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames", None)
    activatable = _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "ListActivatableNames", None)
    return BUS_NAME in reply[0] or BUS_NAME in activatable[0]


def _call(bus: Gio.DBusConnection, name: str | None, path: str, iface: str, method: str,
          params: GLib.Variant | None) -> Any:
    try:
        reply = bus.call_sync(name, path, iface, method, params, None, Gio.DBusCallFlags.NONE, CALL_TIMEOUT_MS, None)
    except GLib.Error as exc:
        raise DaemonError(remote_message(exc.message)) from None
    return reply.unpack() if reply is not None else None


def remote_message(message: str) -> str:
    """A D-Bus error's text without GDBus' `GDBus.Error:NAME: ` prefix."""
    if message.startswith("GDBus.Error:"):
        return message.partition(": ")[2] or message
    return message


def os_object(bus: Gio.DBusConnection, stateroot: str | None) -> str:
    return str(_call(bus, BUS_NAME, SYSROOT_PATH, SYSROOT_IFACE, "GetOS", GLib.Variant("(s)", (stateroot or "",)))[0])


def call_os(bus: Gio.DBusConnection, stateroot: str | None, method: str, params: GLib.Variant,
            fds: list[int] | None = None) -> Any:
    """An OS method; FDS go along as the message's file descriptors (the `h` values index them)."""
    if not fds:
        return _call(bus, BUS_NAME, os_object(bus, stateroot), OS_IFACE, method, params)
    fd_list = Gio.UnixFDList.new()
    for fd in fds:
        fd_list.append(fd)  # a duplicate: the caller keeps (and closes) its own
    try:
        reply, _out = bus.call_with_unix_fd_list_sync(BUS_NAME, os_object(bus, stateroot), OS_IFACE, method, params,
                                                      None, Gio.DBusCallFlags.NONE, CALL_TIMEOUT_MS, fd_list, None)
    except GLib.Error as exc:
        raise DaemonError(remote_message(exc.message)) from None
    return reply.unpack()


def follow(address: str, progress: Progress) -> None:
    """Connect to a transaction (peer to peer), Start it, forward its signals; raise when it failed."""
    peer = _transaction_peer(address)
    outcome: list[tuple[bool, str]] = []
    peer.signal_subscribe(None, TX_IFACE, None, "/", None, Gio.DBusSignalFlags.NONE,
                          _forwarder(progress, outcome), None)
    peer.connect("closed", lambda *_args: outcome.append((False, "The daemon closed the transaction")))
    _call(peer, None, "/", TX_IFACE, "Start", None)
    context = GLib.MainContext.default()
    while not outcome:
        context.iteration(True)
    peer.close_sync(None)
    success, error = outcome[0]
    if not success:
        raise DaemonError(error)


def _forwarder(progress: Progress, outcome: list[tuple[bool, str]]) -> Any:
    def on_signal(_conn: Any, _sender: Any, _path: str, _iface: str, name: str, params: GLib.Variant,
                  _data: Any) -> None:
        args = params.unpack()
        if name == "Message":
            progress.message(args[0])
        elif name == "TaskBegin":
            progress.task_begin(args[0])
        elif name == "TaskEnd":
            progress.task_end(args[0])
        elif name == "PercentProgress":
            progress.percent(args[0], int(args[1]))
        elif name == "DownloadProgress":
            progress.download(int(args[4][0]), int(args[5][0]))
        elif name == "ProgressEnd":
            progress.progress_end()
        elif name == "Finished":
            progress.finished(bool(args[0]), str(args[1]))
            outcome.append((bool(args[0]), str(args[1])))
    return on_signal


def trigger_automatic_update(bus: Gio.DBusConnection, stateroot: str | None, progress: Progress) -> bool:
    """`upgrade --trigger-automatic-update-policy`: run the configured policy; False when it is `none`."""
    enabled, address = call_os(bus, stateroot, "AutomaticUpdateTrigger", GLib.Variant("(a{sv})", ({},)))
    if enabled:
        follow(str(address), progress)
    return bool(enabled)


def get_property(bus: Gio.DBusConnection, path: str, iface: str, name: str) -> Any:
    return _call(bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "Get", GLib.Variant("(ss)", (iface, name)))[0]


def sysroot_property(bus: Gio.DBusConnection, name: str) -> Any:
    return get_property(bus, SYSROOT_PATH, SYSROOT_IFACE, name)


def served_sysroot(bus: Gio.DBusConnection) -> Path:
    """The sysroot the daemon serves (its Path property)."""
    return Path(str(sysroot_property(bus, "Path")))


def reload(bus: Gio.DBusConnection) -> None:
    """Sysroot.Reload: the daemon re-reads its configuration and the stateroots."""
    _call(bus, BUS_NAME, SYSROOT_PATH, SYSROOT_IFACE, "Reload", None)


def active_transaction(bus: Gio.DBusConnection) -> tuple[str, str] | None:
    """The daemon's running transaction: its Title and InitiatingClientDescription (None: none runs)."""
    address = str(sysroot_property(bus, "ActiveTransactionPath"))
    if not address:
        return None
    try:
        peer = _transaction_peer(address)
    except DaemonError:
        return None  # it ended meanwhile
    try:
        return _transaction_property(peer, "Title"), _transaction_property(peer, "InitiatingClientDescription")
    except DaemonError:
        return None
    finally:
        peer.close_sync(None)


def cancel_active(bus: Gio.DBusConnection) -> str | None:
    """Cancel the daemon's running transaction; its title, or None when none runs."""
    address = str(sysroot_property(bus, "ActiveTransactionPath"))
    if not address:
        return None
    peer = _transaction_peer(address)
    title = _transaction_property(peer, "Title")
    _call(peer, None, "/", TX_IFACE, "Cancel", None)
    peer.close_sync(None)
    return title


def _transaction_peer(address: str) -> Gio.DBusConnection:
    """The peer-to-peer connection to a transaction at address."""
    try:
        return Gio.DBusConnection.new_for_address_sync(address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT,
                                                       None, None)
    except GLib.Error as exc:
        raise DaemonError(f"cannot connect to the transaction: {exc.message}") from None


def _transaction_property(peer: Gio.DBusConnection, name: str) -> str:
    reply = _call(peer, None, "/", "org.freedesktop.DBus.Properties", "Get", GLib.Variant("(ss)", (TX_IFACE, name)))
    return str(reply[0])


def jsonable(value: Any) -> Any:
    """An unpacked D-Bus value as JSON would carry it: tuples as arrays, byte strings as numbers."""
    if isinstance(value, bytes | bytearray):
        return list(value)
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return value


def outcome_after(sysroot: Sysroot, before: list[Deployment]) -> Outcome:
    """What a transaction run by the daemon changed, as the in-process engine reports it: the new deployment
    (None: nothing changed) and its package diff against the booted one (or, for another stateroot, against
    that stateroot's previous deployment)."""
    known = {d.key for d in before}
    new = [d for d in sysroot.deployments() if d.key not in known]
    if not new:
        return Outcome(None)
    dep = new[0]
    booted = sysroot.booted()
    guest = booted is not None and booted.stateroot != dep.stateroot
    previous = next((d for d in before if d.stateroot == dep.stateroot), None)
    reference = booted if booted is not None and not guest else previous
    diff = package_diff(sysroot.repo, reference.csum, dep.csum) if reference is not None else None
    return Outcome(dep, dep.csum, diff, guest=guest, staged=dep.staged)
