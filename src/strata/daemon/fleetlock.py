"""The FleetLock protocol (as zincati speaks it) for the `apply` policy: take a reboot slot before rebooting
into a staged update (`POST /v1/pre-reboot`), give it back once the new deployment has booted
(`POST /v1/steady-state`). Both send `fleet-lock-protocol: true` and `{"client_params": {"id", "group"}}`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from strata.daemon.config import FleetLockConfig
from strata.errors import StrataError

TIMEOUT = 30


class FleetLockError(StrataError):
    """The FleetLock server could not be reached or answered nonsense."""


def _post(config: FleetLockConfig, endpoint: str) -> bool:
    """True when the server grants the request (HTTP 200), False when it refuses it."""
    body = json.dumps({"client_params": {"id": config.node_id, "group": config.group}}).encode()
    request = urllib.request.Request(f"{config.url}{endpoint}", data=body, method="POST",
                                     headers={"fleet-lock-protocol": "true", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError) as exc:
        raise FleetLockError(f"FleetLock server {config.url}: {getattr(exc, 'reason', exc)}") from None


def take_slot(config: FleetLockConfig) -> bool:
    return _post(config, "/v1/pre-reboot")


def release_slot(config: FleetLockConfig) -> bool:
    return _post(config, "/v1/steady-state")
