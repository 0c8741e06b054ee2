"""rpm-ostree's transaction protocol: a mutating method answers with the address of a peer-to-peer D-Bus
server; the client connects (no bus, no Hello), calls Start on "/" and receives the Transaction signals, and
Finished last. The work runs in a worker process (strata.daemon.worker) whose JSON lines become the signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

from strata.daemon.worker import Job

TRANSACTION_IFACE = "org.projectatomic.rpmostree1.Transaction"
TRANSACTION_PATH = "/"
SIGNAL_TYPES = {"Message": "(s)", "TaskBegin": "(s)", "TaskEnd": "(s)", "PercentProgress": "(su)",
                "DownloadProgress": "((tt)(uu)(uuu)(uuut)(uu)(tt))", "ProgressEnd": None, "Finished": "(bs)"}
NOT_STARTED_TIMEOUT = 60  # seconds a transaction waits for a client to call Start
LINGER_AFTER_FINISH = 5  # seconds late clients may still connect and receive Finished


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


class TransactionServer:
    """One transaction: its private server socket, its worker and the peers watching it."""

    def __init__(self, info: Gio.DBusInterfaceInfo, socket_path: Path, job: Job, title: str, initiator: str,
                 on_done: Callable[[TransactionServer], None]) -> None:
        self.info = info
        self.socket_path = socket_path
        self.job = job
        self.title = title
        self.initiator = initiator
        self.on_done = on_done
        self.peers: list[Gio.DBusConnection] = []
        self.worker: subprocess.Popen[bytes] | None = None
        self.finished: tuple[bool, str] | None = None
        self._reported: tuple[bool, str] | None = None
        self._buffer = b""
        self._closed = False
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.server = Gio.DBusServer.new_sync(f"unix:path={socket_path}", Gio.DBusServerFlags.NONE,
                                              Gio.dbus_generate_guid(), None, None)
        os.chmod(socket_path, 0o666)  # any local client may watch; Start/Cancel rights were checked already
        self.server.connect("new-connection", self._on_connection)
        self.server.start()
        self._timeout = GLib.timeout_add_seconds(NOT_STARTED_TIMEOUT, self._abandon)

    @property
    def address(self) -> str:
        return f"unix:path={self.socket_path}"

    @property
    def running(self) -> bool:
        return self.finished is None

    # ------------------------------------------------------------ peers

    def _on_connection(self, _server: Gio.DBusServer, connection: Gio.DBusConnection) -> bool:
        connection.register_object(TRANSACTION_PATH, self.info, self._on_call, self._on_get_property, None)
        connection.connect("closed", self._on_peer_closed)
        self.peers.append(connection)
        return True

    def _on_peer_closed(self, connection: Gio.DBusConnection, _remote: bool, _error: Any) -> None:
        if connection in self.peers:
            self.peers.remove(connection)

    def _on_get_property(self, _conn: Gio.DBusConnection, _sender: str | None, _path: str, _iface: str,
                         name: str) -> GLib.Variant | None:
        if name == "Title":
            return GLib.Variant("s", self.title)
        if name == "InitiatingClientDescription":
            return GLib.Variant("s", self.initiator)
        return None

    def _on_call(self, connection: Gio.DBusConnection, _sender: str | None, _path: str, _iface: str,
                 method: str, _params: GLib.Variant, invocation: Gio.DBusMethodInvocation) -> None:
        if method == "Start":
            started = self.start()
            invocation.return_value(GLib.Variant("(b)", (started,)))
            if not started and self.finished is not None:
                self._emit_to(connection, "Finished", list(self.finished))
        elif method == "Cancel":
            self.cancel()
            invocation.return_value(None)

    # ------------------------------------------------------------ the worker

    def start(self) -> bool:
        """Start the worker; False when it was started before (the caller joins the running transaction)."""
        if self.worker is not None or self.finished is not None:
            return False
        GLib.source_remove(self._timeout)
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "strata.daemon.worker", str(write_fd), json.dumps(asdict(self.job))]
        self.worker = subprocess.Popen(argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL)
        os.close(write_fd)
        GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, read_fd, GLib.IOCondition.IN | GLib.IOCondition.HUP,
                              self._on_output)
        return True

    def cancel(self) -> None:
        """The engine's cancellation: SIGTERM to the worker (a change already being made visible completes)."""
        if self.worker is not None and self.finished is None:
            with contextlib.suppress(ProcessLookupError):
                self.worker.send_signal(signal.SIGTERM)
        elif self.worker is None and self.finished is None:
            self._finish(False, "Transaction cancelled")

    def _on_output(self, fd: int, _condition: GLib.IOCondition) -> bool:
        chunk = os.read(fd, 65536)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._forward(line)
        if chunk:
            return True
        os.close(fd)
        status = self.worker.wait() if self.worker is not None else 0  # it has let go of the sysroot
        if self.finished is None:
            success, error = self._reported or (False, f"Transaction worker exited unexpectedly (status {status})")
            self._finish(success, error)
        return False

    def _forward(self, line: bytes) -> None:
        try:
            name, *args = json.loads(line)
        except (ValueError, TypeError):
            return
        if name not in SIGNAL_TYPES:
            return
        if name == "Finished":  # sent once the worker has exited, so that the next transaction finds it gone
            self._reported = (bool(args[0]), str(args[1]))
            return
        self._emit(name, args)

    # ------------------------------------------------------------ signals and the end

    def _emit(self, name: str, args: list[Any]) -> None:
        for peer in list(self.peers):
            self._emit_to(peer, name, args)

    def _emit_to(self, peer: Gio.DBusConnection, name: str, args: list[Any]) -> None:
        signature = SIGNAL_TYPES[name]
        body = None if signature is None else GLib.Variant(signature, _tuples(args))
        with contextlib.suppress(GLib.Error):
            peer.emit_signal(None, TRANSACTION_PATH, TRANSACTION_IFACE, name, body)

    def _finish(self, success: bool, error: str) -> None:
        self.finished = (success, error)
        self._emit("Finished", [success, error])
        self.on_done(self)
        GLib.timeout_add_seconds(LINGER_AFTER_FINISH, self.close)

    def _abandon(self) -> bool:
        if self.worker is None and self.finished is None:
            self._finish(False, "Transaction abandoned: no client called Start")
        return False

    def close(self) -> bool:
        if not self._closed:
            self._closed = True
            self.server.stop()
            for peer in self.peers:
                peer.close(None, None, None)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        return False
