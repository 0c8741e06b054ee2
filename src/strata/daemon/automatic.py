"""Automatic updates (rpm-ostreed's AutomaticUpdatePolicy): `check` pulls the newest commit of the origin
ref and caches what an update would bring (the OS object's CachedUpdate), `stage` deploys it for the next
boot, `none` does nothing. Beyond rpm-ostree, `apply` stages and then reboots, but only with a reboot slot
from a FleetLock server; the slot is released once the staged deployment is the booted one."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from strata.core import upgrade as upgrades
from strata.core.admin import boot
from strata.core.client import open_context
from strata.core.pkgdiff import json_items
from strata.core.transaction import Progress
from strata.daemon.config import FleetLockConfig
from strata.daemon.fleetlock import release_slot, take_slot
from strata.errors import StrataError
from strata.image.fsutil import atomic_write
from strata.sysroot.sysroot import Sysroot

CACHE_DIR = Path("extensions/strata/cached-update")
TIMER_UNIT = "strata-automatic.timer"
SERVICE_UNIT = "strata-automatic.service"
SLOT_RECORD = Path("extensions/strata/fleetlock-slot.json")  # the deployment a held reboot slot is for


def _cache_path(sysroot: Sysroot, stateroot: str) -> Path:
    return sysroot.repo.path / CACHE_DIR / f"{stateroot}.json"


def read_cached_update(sysroot: Sysroot, stateroot: str) -> dict[str, Any] | None:
    """What the last `check` found for the stateroot (None: no update known)."""
    try:
        data = json.loads(_cache_path(sysroot, stateroot).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_cached_update(sysroot: Sysroot, stateroot: str, update: upgrades.AvailableUpdate | None,
                         origin: str) -> None:
    path = _cache_path(sysroot, stateroot)
    if update is None:
        path.unlink(missing_ok=True)
        return
    data = {"osname": stateroot, "checksum": update.commit, "version": update.version,
            "timestamp": update.timestamp, "origin": origin, "ref-has-new-commit": True,
            "rpm-diff": json_items(update.diff) if update.diff is not None else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data).encode(), fsync=False)


def run_policy(sysroot: Sysroot, stateroot: str | None, mode: str, progress: Progress,
               fleetlock: FleetLockConfig | None = None) -> None:
    if mode == "none":
        return
    ctx = open_context(sysroot, stateroot)
    if mode == "check":
        update = upgrades.check_upgrade(sysroot, ctx.stateroot, progress)
        _write_cached_update(sysroot, ctx.stateroot, update, ctx.origin().refspec)
        progress.message("No updates available." if update is None else f"Update available: {update.commit}")
        return
    if mode == "stage":
        outcome = upgrades.upgrade(sysroot, ctx.stateroot, progress)
        _write_cached_update(sysroot, ctx.stateroot, None, "")
        progress.message("Update staged." if outcome.changed else "No upgrade available.")
        return
    if mode == "apply":
        if fleetlock is None:
            raise StrataError("AutomaticUpdatePolicy=apply needs a [FleetLock] URL in the configuration")
        apply_update(sysroot, ctx.stateroot, fleetlock, progress)
        return
    raise StrataError(f"unknown automatic update policy '{mode}'")


def apply_update(sysroot: Sysroot, stateroot: str, fleetlock: FleetLockConfig, progress: Progress) -> None:
    """Stage the update; reboot into it only with a reboot slot; release the slot once it has booted."""
    release_if_booted(sysroot, fleetlock, progress)
    upgrades.upgrade(sysroot, stateroot, progress)
    _write_cached_update(sysroot, stateroot, None, "")
    staged = sysroot.staged_deployment()
    if staged is None or staged.stateroot != stateroot:
        progress.message("No update to apply.")
        return
    if not take_slot(fleetlock):
        progress.message("Reboot slot not granted by the FleetLock server; the update stays staged for the next boot")
        return
    record = sysroot.repo.path / SLOT_RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(record, json.dumps({"checksum": staged.csum, "stateroot": stateroot}).encode(), fsync=True)
    progress.message("Reboot slot taken; rebooting into the update")
    _reboot(sysroot, progress)
    release_if_booted(sysroot, fleetlock, progress)


def release_if_booted(sysroot: Sysroot, fleetlock: FleetLockConfig, progress: Progress) -> None:
    """Give the reboot slot back when the deployment it was taken for is the booted one."""
    record = sysroot.repo.path / SLOT_RECORD
    try:
        held = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    booted = sysroot.booted()
    if booted is None or booted.csum != held.get("checksum"):
        return
    if release_slot(fleetlock):
        record.unlink(missing_ok=True)
        progress.message("Reboot slot released")


def _reboot(sysroot: Sysroot, progress: Progress) -> None:
    if sysroot.path.resolve() == Path("/"):
        subprocess.run(["systemctl", "reboot"], check=True)
    else:
        boot(sysroot, progress)


def timer_state() -> str:
    """The second half of status' `AutomaticUpdates:` line: what systemd knows of the timer and its service."""
    if not Path("/run/systemd/system").is_dir():
        return f"{TIMER_UNIT}: unknown state"
    timer = _unit_properties(TIMER_UNIT, "LoadState", "ActiveState", "LastTriggerUSecMonotonic")
    service = _unit_properties(SERVICE_UNIT, "ActiveState", "Result")
    if not timer or timer.get("LoadState") != "loaded":
        return f"{TIMER_UNIT}: unknown state"
    if service.get("ActiveState") in ("activating", "active"):
        return f"{SERVICE_UNIT}: running"
    if service.get("Result", "success") != "success":
        return f"{SERVICE_UNIT}: last run failed"
    if timer.get("ActiveState") != "active":
        return f"{TIMER_UNIT}: inactive"
    last = timer.get("LastTriggerUSecMonotonic", "0")
    if not last.isdigit() or int(last) == 0:
        return f"{TIMER_UNIT}: no runs since boot"
    return f"{TIMER_UNIT}: last run {_ago(time.clock_gettime(time.CLOCK_MONOTONIC) - int(last) / 1e6)} ago"


def _unit_properties(unit: str, *names: str) -> dict[str, str]:
    try:
        proc = subprocess.run(["systemctl", "show", unit, "--timestamp=unix", *(f"--property={n}" for n in names)],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _ago(seconds: float) -> str:
    """systemd's relative time, to minutes: `4h 32min`, `2min`, `1 day 3h`."""
    minutes = max(int(seconds // 60), 0)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [f"{days} day{'s' if days != 1 else ''}" if days else "", f"{hours}h" if hours else "",
             f"{mins}min" if mins or not (days or hours) else ""]
    return " ".join(part for part in parts if part)
