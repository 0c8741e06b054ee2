"""rpm-ostreed.conf's keys: `[Daemon] AutomaticUpdatePolicy=none|check|stage` (strata adds `apply`) and
`IdleExitTimeout=SECONDS` (0: never exit when idle)."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from strata.errors import InvalidInputError

POLICIES = ("none", "check", "stage", "apply")
DEFAULT_CONFIG = Path("/etc/rpm-ostreed.conf")
DEFAULT_IDLE_EXIT = 60


@dataclass(frozen=True)
class DaemonConfig:
    automatic_update_policy: str = "none"
    idle_exit_timeout: int = DEFAULT_IDLE_EXIT


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
    return DaemonConfig(policy, int(timeout))
