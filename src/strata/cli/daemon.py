"""`strata daemon`: the system service (rpm-ostree's D-Bus API) over a sysroot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from strata.cli.common import add_sysroot_option


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("daemon", help="serve rpm-ostree's D-Bus API (the system service)")
    add_sysroot_option(p)
    p.add_argument("--address", help="a D-Bus address to serve on instead of the system bus")
    p.add_argument("--runtime-dir", type=Path, default=Path("/run/strata-daemon"),
                   help="where the transaction sockets go (default /run/strata-daemon)")
    p.add_argument("--config", type=Path, default=None,
                   help="the [Daemon] configuration (default $STRATA_DAEMON_CONFIG, else /etc/rpm-ostreed.conf)")
    p.set_defaults(func=_daemon)

    p = sub.add_parser("reload", help="Reload configuration")
    add_sysroot_option(p)
    p.set_defaults(func=_reload)


def _daemon(args: argparse.Namespace) -> int:
    from strata.daemon.config import config_path
    from strata.daemon.run import ServeOptions, serve
    serve(ServeOptions(Path(args.sysroot), args.address, args.runtime_dir, args.config or config_path()))
    return 0


def _reload(args: argparse.Namespace) -> int:
    """In-process every command reads the configuration afresh: only check that it parses. Through the daemon
    (strata.cli.via_daemon) this is Sysroot.Reload."""
    from strata.daemon.config import config_path, read_config
    read_config(config_path())
    return 0
