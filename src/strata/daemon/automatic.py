"""Automatic updates (rpm-ostreed's AutomaticUpdatePolicy): `check` pulls the newest commit of the origin
ref and caches what an update would bring (the OS object's CachedUpdate), `stage` deploys it for the next
boot, `none` does nothing. Beyond rpm-ostree, `apply` stages and then reboots, but only with a reboot slot
from a FleetLock server; the slot is released once the staged deployment is the booted one."""

from __future__ import annotations

import json
import subprocess
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
