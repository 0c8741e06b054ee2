"""Automatic updates (rpm-ostreed's AutomaticUpdatePolicy): `check` pulls the newest commit of the origin
ref and caches what an update would bring (the OS object's CachedUpdate), `stage` deploys it for the next
boot, `none` does nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from strata.core import upgrade as upgrades
from strata.core.client import open_context
from strata.core.pkgdiff import json_items
from strata.core.transaction import Progress
from strata.errors import StrataError
from strata.image.fsutil import atomic_write
from strata.sysroot.sysroot import Sysroot

CACHE_DIR = Path("extensions/strata/cached-update")


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


def run_policy(sysroot: Sysroot, stateroot: str | None, mode: str, progress: Progress) -> None:
    if mode == "none":
        return
    ctx = open_context(sysroot, stateroot)
    if mode == "check":
        update = upgrades.check_upgrade(sysroot, ctx.stateroot, progress)
        _write_cached_update(sysroot, ctx.stateroot, update, ctx.origin().refspec)
        progress.message("No updates available." if update is None else f"Update available: {update.commit}")
        return
    if mode in ("stage", "apply"):
        outcome = upgrades.upgrade(sysroot, ctx.stateroot, progress)
        _write_cached_update(sysroot, ctx.stateroot, None, "")
        progress.message("Update staged." if outcome.changed else "No upgrade available.")
        return
    raise StrataError(f"unknown automatic update policy '{mode}'")
