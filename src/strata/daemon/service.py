"""The service object tree on the bus: /org/projectatomic/rpmostree1/Sysroot and one OS object per stateroot,
as rpm-ostree's daemon serves them, over a strata sysroot. Reads are answered from disk on every call;
changes become transactions (strata.daemon.txserver), one at a time."""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

from strata.core.db import packages_or_none
from strata.core.pkgdiff import diff_packages
from strata.core.transaction import active_transaction
from strata.daemon import automatic
from strata.daemon.authority import METHOD_ACTIONS, authorized
from strata.daemon.config import DaemonConfig, read_config
from strata.daemon.localrpms import receive_packages
from strata.daemon.names import OS_IFACE, OS_PATH_PREFIX, SYSROOT_IFACE, SYSROOT_PATH, TX_IFACE
from strata.daemon.options import unpack
from strata.daemon.requests import Request, automatic_request, build_request
from strata.daemon.txserver import TransactionServer
from strata.daemon.variants import (
    cached_update_variant,
    deployment_variant,
    nevra_details,
    rpm_diff_entries,
)
from strata.daemon.worker import Job
from strata.errors import InvalidInputError, StrataError
from strata.sysroot.sysroot import Deployment, Sysroot

ERROR_FAILED = "org.projectatomic.rpmostreed.Error.Failed"
ERROR_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
IO_ERROR_BUSY = 26  # G_IO_ERROR_BUSY: rpm-ostree's "Transaction in progress" error


def introspection() -> Gio.DBusNodeInfo:
    xml = resources.files("strata.daemon").joinpath("data/org.projectatomic.rpmostree1.xml").read_text()
    return Gio.DBusNodeInfo.new_for_xml(xml)


def os_object_path(stateroot: str) -> str:
    return OS_PATH_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", stateroot)


class CallError(Exception):
    """A D-Bus error reply: its name and one-line message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass
class DaemonState:
    sysroot_path: Path
    runtime_dir: Path
    config_path: Path | None
    config: DaemonConfig = field(default_factory=DaemonConfig)
    transaction: TransactionServer | None = None
    transaction_method: tuple[str, str, str] = ("", "", "")
    clients: set[str] = field(default_factory=set)
    serial: int = 0


class Daemon:
    """The Sysroot and OS objects on one bus connection."""

    def __init__(self, bus: Gio.DBusConnection, state: DaemonState, loop: GLib.MainLoop) -> None:
        self.bus = bus
        self.state = state
        self.loop = loop
        self.node = introspection()
        self.os_objects: dict[str, int] = {}
        self._idle_source = 0
        self.reload()
        bus.register_object(SYSROOT_PATH, self.node.lookup_interface(SYSROOT_IFACE), self._on_sysroot_call,
                            self._on_sysroot_property, None)
        bus.signal_subscribe("org.freedesktop.DBus", "org.freedesktop.DBus", "NameOwnerChanged",
                             "/org/freedesktop/DBus", None, Gio.DBusSignalFlags.NONE, self._on_name_owner, None)
        self._arm_idle_exit()

    # ------------------------------------------------------------ state

    def sysroot(self) -> Sysroot:
        return Sysroot.open(self.state.sysroot_path)

    def reload(self) -> None:
        """Re-read the configuration and the stateroots (new OS objects appear)."""
        self.state.config = read_config(self.state.config_path)
        for stateroot in self.sysroot().stateroots():
            if stateroot not in self.os_objects:
                self.os_objects[stateroot] = self.bus.register_object(
                    os_object_path(stateroot), self.node.lookup_interface(OS_IFACE), self._os_call(stateroot),
                    self._os_property(stateroot), None)
        self._properties_changed()

    def _properties_changed(self) -> None:
        names = ["Deployments", "Booted", "ActiveTransaction", "ActiveTransactionPath", "AutomaticUpdatePolicy"]
        self._emit_changed(SYSROOT_PATH, SYSROOT_IFACE, names, self._on_sysroot_property)
        for stateroot in self.os_objects:
            getter = self._os_property(stateroot)
            names = ["BootedDeployment", "DefaultDeployment", "RollbackDeployment", "CachedUpdate"]
            self._emit_changed(os_object_path(stateroot), OS_IFACE, names, getter)

    def _emit_changed(self, path: str, iface: str, names: list[str], getter: Any) -> None:
        changed = {name: getter(self.bus, None, path, iface, name) for name in names}
        body = GLib.Variant("(sa{sv}as)", (iface, changed, []))
        with contextlib.suppress(GLib.Error):
            self.bus.emit_signal(None, path, "org.freedesktop.DBus.Properties", "PropertiesChanged", body)

    # ------------------------------------------------------------ Sysroot

    def _on_sysroot_property(self, _conn: Gio.DBusConnection, _sender: str | None, _path: str, _iface: str,
                             name: str) -> GLib.Variant | None:
        sysroot = self.sysroot()
        if name == "Path":
            return GLib.Variant("s", str(self.state.sysroot_path))
        if name == "Booted":
            booted = sysroot.booted()
            return GLib.Variant("o", os_object_path(booted.stateroot) if booted else "/")
        if name == "Deployments":
            booted = sysroot.booted()
            return GLib.Variant.new_array(GLib.VariantType("a{sv}"),
                                          [deployment_variant(sysroot, d, booted) for d in sysroot.deployments()])
        if name == "ActiveTransaction":
            return GLib.Variant("(sss)", self._active_transaction(sysroot))
        if name == "ActiveTransactionPath":
            txn = self.state.transaction
            return GLib.Variant("s", txn.address if txn is not None and txn.running else "")
        if name == "AutomaticUpdatePolicy":
            return GLib.Variant("s", self.state.config.automatic_update_policy)
        return None

    def _active_transaction(self, sysroot: Sysroot) -> tuple[str, str, str]:
        txn = self.state.transaction
        if txn is not None and txn.running:
            return self.state.transaction_method
        record = active_transaction(sysroot)  # one started in-process, outside the daemon
        return (record.title, record.initiator, "") if record is not None else ("", "", "")

    def _on_sysroot_call(self, _conn: Gio.DBusConnection, sender: str, _path: str, _iface: str, method: str,
                         params: GLib.Variant, invocation: Gio.DBusMethodInvocation) -> None:
        self._answer(invocation, lambda: self._sysroot_method(sender, method, params))

    def _sysroot_method(self, sender: str, method: str, params: GLib.Variant) -> GLib.Variant | None:
        if method == "GetOS":
            return GLib.Variant("(o)", (self._os_path(params.unpack()[0]),))
        self._require(sender, [METHOD_ACTIONS[method]], method)
        if method == "RegisterClient":
            self.state.clients.add(sender)
        elif method == "UnregisterClient":
            self.state.clients.discard(sender)
        else:  # Reload, ReloadConfig
            self.reload()
        self._arm_idle_exit()
        return None

    def _os_path(self, name: str) -> str:
        sysroot = self.sysroot()
        if not name:
            booted = sysroot.booted()
            if booted is None:
                raise CallError(ERROR_FAILED, "No booted deployment; name an OS")
            name = booted.stateroot
        if name not in self.os_objects:
            raise CallError(ERROR_FAILED, f'OS name "{name}" not found')
        return os_object_path(name)

    # ------------------------------------------------------------ OS

    def _os_property(self, stateroot: str) -> Any:
        def get(_conn: Gio.DBusConnection, _sender: str | None, _path: str, _iface: str,
                name: str) -> GLib.Variant | None:
            return self._os_property_value(stateroot, name)
        return get

    def _os_property_value(self, stateroot: str, name: str) -> GLib.Variant | None:
        sysroot = self.sysroot()
        if name == "Name":
            return GLib.Variant("s", stateroot)
        if name in ("CachedUpdate", "HasCachedUpdateRpmDiff"):
            cached = automatic.read_cached_update(sysroot, stateroot)
            if name == "HasCachedUpdateRpmDiff":
                return GLib.Variant("b", cached is not None)
            return cached_update_variant(cached or {})
        booted = sysroot.booted()
        mine = [d for d in sysroot.deployments() if d.stateroot == stateroot]
        return deployment_variant(sysroot, _pick(name, mine, booted), booted)

    def _os_call(self, stateroot: str) -> Any:
        def call(_conn: Gio.DBusConnection, sender: str, _path: str, _iface: str, method: str,
                 params: GLib.Variant, invocation: Gio.DBusMethodInvocation) -> None:
            self._answer(invocation, lambda: self._os_method(stateroot, sender, method, params,
                                                             invocation.get_message().get_unix_fd_list()))
        return call

    def _os_method(self, stateroot: str, sender: str, method: str, params: GLib.Variant,
                   fd_list: Gio.UnixFDList | None = None) -> GLib.Variant | None:
        if method == "GetPackages":
            return self._get_packages(stateroot, params.unpack()[0])
        if method == "GetDeploymentsRpmDiff":
            return self._rpm_diff(*params.unpack())
        if method == "AutomaticUpdateTrigger":
            return self._automatic_trigger(stateroot, sender, params)
        request = build_request(method, params, str(self.state.sysroot_path), stateroot)
        self._require(sender, request.actions, method)
        return GLib.Variant("(s)", (self._start_transaction(request, method, sender, stateroot, fd_list),))

    def _require(self, sender: str, actions: list[str], method: str) -> None:
        if not authorized(self.bus, sender, actions):
            raise CallError(ERROR_ACCESS_DENIED, f"strata daemon: operation {method} not allowed for user")

    def _get_packages(self, stateroot: str, names: list[str]) -> GLib.Variant:
        sysroot = self.sysroot()
        booted = sysroot.booted()
        mine = [d for d in sysroot.deployments() if d.stateroot == stateroot]
        dep = booted if booted is not None and booted.stateroot == stateroot else (mine[0] if mine else None)
        packages = (packages_or_none(sysroot.repo, dep.csum) or []) if dep is not None else []
        wanted = [p for p in packages if p.name in names]
        return GLib.Variant("(aa{sv})", ([nevra_details(p) for p in wanted],))

    def _rpm_diff(self, deployid0: str, deployid1: str) -> GLib.Variant:
        sysroot = self.sysroot()
        old, new = (self._find_deployment(sysroot, ident) for ident in (deployid0, deployid1))
        before, after = packages_or_none(sysroot.repo, old.csum), packages_or_none(sysroot.repo, new.csum)
        if before is None or after is None:
            raise CallError(ERROR_FAILED, "Deployment has no package list")
        return GLib.Variant("(a(sua{sv}))", (rpm_diff_entries(diff_packages(before, after)),))

    @staticmethod
    def _find_deployment(sysroot: Sysroot, ident: str) -> Deployment:
        for dep in sysroot.deployments():
            if f"{dep.stateroot}-{dep.name}" == ident:
                return dep
        raise CallError(ERROR_FAILED, f"Deployment with id '{ident}' not found")

    def _automatic_trigger(self, stateroot: str, sender: str, params: GLib.Variant) -> GLib.Variant:
        options = unpack("AutomaticUpdateTrigger", params.get_child_value(0))
        mode = str(options.get("mode", "auto"))
        policy = self.state.config.automatic_update_policy if mode == "auto" else mode
        if policy not in ("none", "check", "stage", "apply"):
            raise InvalidInputError(f"AutomaticUpdateTrigger: invalid mode '{mode}'")
        if policy == "none":
            return GLib.Variant("(bs)", (False, ""))
        self._require(sender, ["upgrade"], "AutomaticUpdateTrigger")
        request = automatic_request(policy, Job(str(self.state.sysroot_path), "", stateroot),
                                    self.state.config.fleetlock)
        address = self._start_transaction(request, "AutomaticUpdateTrigger", sender, stateroot)
        return GLib.Variant("(bs)", (True, address))

    # ------------------------------------------------------------ transactions

    def _start_transaction(self, request: Request, method: str, sender: str, stateroot: str,
                           fd_list: Gio.UnixFDList | None = None) -> str:
        current = self.state.transaction
        if current is not None and current.running:
            raise _busy(current.title)
        record = active_transaction(self.sysroot())
        if record is not None:
            raise _busy(record.title)
        self.state.serial += 1
        self._receive_local_packages(request, fd_list)
        socket = self.state.runtime_dir / f"transaction-{self.state.serial}.sock"
        initiator = f"client(dbus:{sender})"
        txn = TransactionServer(self.node.lookup_interface(TX_IFACE), socket, request.job, request.title,
                                initiator, self._transaction_done)
        self.state.transaction = txn
        self.state.transaction_method = (method, sender, os_object_path(stateroot))
        self._properties_changed()
        return txn.address

    def _local_packages_dir(self) -> Path:
        return self.state.runtime_dir / f"local-packages-{self.state.serial}"

    def _receive_local_packages(self, request: Request, fd_list: Gio.UnixFDList | None) -> None:
        """Copy RPMs passed as file descriptors (after authorization, before the worker runs)."""
        try:
            for arg, indices in request.local_fds.items():
                request.job.args[arg] = receive_packages(fd_list, indices, self._local_packages_dir(), arg)
        except (OSError, InvalidInputError) as exc:
            shutil.rmtree(self._local_packages_dir(), ignore_errors=True)
            raise InvalidInputError(f"receiving local packages: {exc}") from None

    def _transaction_done(self, _txn: TransactionServer) -> None:
        shutil.rmtree(self._local_packages_dir(), ignore_errors=True)
        self._properties_changed()
        self._arm_idle_exit()

    # ------------------------------------------------------------ replies and lifetime

    def _answer(self, invocation: Gio.DBusMethodInvocation, work: Any) -> None:
        try:
            invocation.return_value(work())
        except CallError as exc:
            if exc.name == "busy":
                invocation.return_error_literal(Gio.io_error_quark(), IO_ERROR_BUSY, str(exc))
            else:
                invocation.return_dbus_error(exc.name, str(exc))
        except InvalidInputError as exc:
            invocation.return_dbus_error(ERROR_INVALID_ARGS, str(exc))
        except StrataError as exc:
            invocation.return_dbus_error(ERROR_FAILED, str(exc))
        except GLib.Error as exc:  # the bus or polkit failed us
            invocation.return_dbus_error(ERROR_FAILED, exc.message)
        except Exception as exc:  # a bug: the caller still gets an answer, in one line
            invocation.return_dbus_error(ERROR_FAILED, f"internal error ({type(exc).__name__}): {exc}")

    def _on_name_owner(self, _conn: Gio.DBusConnection, _sender: str, _path: str, _iface: str, _signal: str,
                       params: GLib.Variant, _data: Any) -> None:
        name, _old, new = params.unpack()
        if not new and name in self.state.clients:
            self.state.clients.discard(name)
            self._arm_idle_exit()

    def _arm_idle_exit(self) -> None:
        if self._idle_source:
            GLib.source_remove(self._idle_source)
            self._idle_source = 0
        timeout = self.state.config.idle_exit_timeout
        if timeout > 0:
            self._idle_source = GLib.timeout_add_seconds(timeout, self._idle_exit)

    def _idle_exit(self) -> bool:
        txn = self.state.transaction
        if self.state.clients or (txn is not None and txn.running):
            return True
        self._idle_source = 0
        self.loop.quit()
        return False


def _busy(title: str) -> CallError:
    return CallError("busy", f"Transaction in progress: {title} (cancel it with `strata cancel`)")


def _pick(name: str, mine: list[Deployment], booted: Deployment | None) -> Deployment | None:
    """BootedDeployment, DefaultDeployment (the first of the stateroot) or RollbackDeployment (the one after
    the booted one, or after the default when this stateroot is not booted)."""
    if name == "BootedDeployment":
        return booted if booted is not None and booted in mine else None
    if name == "DefaultDeployment":
        return mine[0] if mine else None
    anchor = booted if booted is not None and booted in mine else (mine[0] if mine else None)
    if anchor is None:
        return None
    rest = mine[mine.index(anchor) + 1:]
    return next((d for d in rest if not d.staged), None)

