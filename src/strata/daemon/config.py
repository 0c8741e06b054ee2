"""rpm-ostreed.conf's keys: `[Daemon] AutomaticUpdatePolicy=none|check|stage` (strata adds `apply`) and
`IdleExitTimeout=SECONDS` (0: never exit when idle); for `apply`, `[FleetLock] URL=`, `Group=` (default
"default") and `ID=` (default: /etc/machine-id, else the host name)."""

from __future__ import annotations

import configparser
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from strata.errors import InvalidInputError

POLICIES = ("none", "check", "stage", "apply")
DEFAULT_CONFIG = Path("/etc/rpm-ostreed.conf")
DEFAULT_IDLE_EXIT = 60


def config_path() -> Path:
    """The configuration file the daemon and `status` read: $STRATA_DAEMON_CONFIG, else /etc/rpm-ostreed.conf."""
    return Path(os.environ.get("STRATA_DAEMON_CONFIG") or DEFAULT_CONFIG)


@dataclass(frozen=True)
class FleetLockConfig:
    url: str
    group: str
    node_id: str


@dataclass(frozen=True)
class DaemonConfig:
    automatic_update_policy: str = "none"
    idle_exit_timeout: int = DEFAULT_IDLE_EXIT
    fleetlock: FleetLockConfig | None = None


def read_config(path: Path | None) -> DaemonConfig:
    """The [Daemon] section of the file (defaults when there is no file)."""
    if path is None or not path.is_file():
        return DaemonConfig()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot parse: {type(exc).__name__}") from None
    section = parser["Daemon"] if parser.has_section("Daemon") else {}
    policy = section.get("AutomaticUpdatePolicy", "none").strip().lower()
    if policy == "off":
        policy = "none"
    if policy == "ex-stage":
        policy = "stage"
    if policy not in POLICIES:
        raise InvalidInputError(f"{path}: invalid AutomaticUpdatePolicy '{policy}' (one of {', '.join(POLICIES)})")
    timeout = section.get("IdleExitTimeout", str(DEFAULT_IDLE_EXIT)).strip()
    if not timeout.isdigit() or int(timeout) > 86400 * 365:
        raise InvalidInputError(f"{path}: invalid IdleExitTimeout '{timeout}'")
    return DaemonConfig(policy, int(timeout), _fleetlock(parser, path))


def _fleetlock(parser: configparser.ConfigParser, path: Path) -> FleetLockConfig | None:
    if not parser.has_section("FleetLock"):
        return None
    section = parser["FleetLock"]
    url = section.get("URL", "").strip()
    if not url.startswith(("http://", "https://")):
        raise InvalidInputError(f"{path}: [FleetLock] URL must be an http(s) URL")
    return FleetLockConfig(url.rstrip("/"), section.get("Group", "default").strip() or "default",
                           section.get("ID", "").strip() or _machine_id())


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()
