"""A FleetLock server for the tests: one reboot slot per group (a semaphore of 1), on 127.0.0.1, recording
every request it gets."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    protocol_header: str | None
    body: dict[str, Any]


@dataclass
class FleetLockState:
    holders: dict[str, str] = field(default_factory=dict)  # group -> node id holding its slot
    seen: list[Seen] = field(default_factory=list)


class FleetLockServer:
    def __init__(self) -> None:
        self.state = FleetLockState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(state: FleetLockState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length", "0")), 65536)
            body = json.loads(self.rfile.read(length) or b"{}")
            state.seen.append(Seen(self.path, self.headers.get("fleet-lock-protocol"), body))
            params = body.get("client_params", {})
            node, group = str(params.get("id", "")), str(params.get("group", ""))
            if self.headers.get("fleet-lock-protocol") != "true" or not node or not group:
                self._reply(400, "bad_request")
            elif self.path == "/v1/pre-reboot":
                granted = state.holders.setdefault(group, node) == node
                self._reply(200 if granted else 409, "" if granted else "failed_lock")
            elif self.path == "/v1/steady-state":
                if state.holders.get(group) == node:
                    del state.holders[group]
                self._reply(200, "")
            else:
                self._reply(404, "not_found")

        def _reply(self, status: int, kind: str) -> None:
            data = json.dumps({"kind": kind, "value": kind}).encode() if kind else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
