"""The rpm-ostree client run as another user (`python3 -m tests.daemon.user_client ADDRESS install PKG...`):
prints the Finished arguments as JSON, or `denied: MESSAGE` with exit status 2 when the daemon refuses."""

from __future__ import annotations

import json
import sys

from gi.repository import GLib

from tests.daemon.rpmostree_client import OS_IFACE, call, connect, os_path, run_transaction


def main(argv: list[str]) -> int:
    address, verb, *packages = argv[1:]
    bus = connect(address)
    added, removed = (packages, []) if verb == "install" else ([], packages)
    try:
        tx_address = call(bus, os_path(bus), OS_IFACE, "PkgChange", "(a{sv}asas)", ({}, added, removed))[0]
    except GLib.Error as exc:
        print(f"denied: {exc.message}")
        return 2
    print(json.dumps(run_transaction(tx_address).finished))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
