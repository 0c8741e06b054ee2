"""`strata usroverlay` (alias `unlock`): a transient writable overlay on the booted deployment's /usr, as
`ostree admin unlock` sets one up. The overlay's upper and work directories live in the sysroot's /run and the
state is ostree's runstate flag, so the next (simulated) boot drops both; the deployment's own files, hardlinks
into the object store, are never written (overlayfs copies a file up before changing it)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from strata.core.transaction import Progress, Transaction
from strata.errors import StrataError
from strata.image.fsutil import atomic_write
from strata.sysroot.sysroot import Deployment, Sysroot

OVERLAY_DIR = "run/strata/usr-overlay"
TRANSIENT_FLAG = "unlocked-transient"
_OPTION_UNSAFE = frozenset(",:\\\n")


@dataclass(frozen=True)
class Unlocked:
    deployment: Deployment
    usr: Path  # where the writable overlay is mounted


def is_real_host(sysroot: Sysroot) -> bool:
    return sysroot.path.resolve() == Path("/") and Path("/run/ostree-booted").exists()


def unlock(sysroot: Sysroot, progress: Progress) -> Unlocked:
    """Mount the overlay over the booted deployment's usr, then record the unlocked state (in this order: a
    recorded state without its overlay would let `strata admin run` write into the deployment itself)."""
    booted = sysroot.booted()
    if booted is None:
        raise StrataError("usroverlay needs a booted deployment (run `strata admin boot` first)")
    if is_real_host(sysroot):
        return _unlock_host(booted)
    with Transaction(sysroot, "usroverlay", [], progress, stateroot=booted.stateroot, check=False) as txn:
        state = sysroot.unlocked_state(booted)
        if state != "none":
            raise StrataError(f"Deployment is already in unlocked state: {state}")
        usr = sysroot.deployment_dir(booted) / "usr"
        work = sysroot.path / OVERLAY_DIR / booted.name
        with txn.critical():
            _mount_overlay(usr, work)
            flag = sysroot.runstate_dir(booted) / TRANSIENT_FLAG
            flag.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(flag, b"", fsync=False)
    return Unlocked(booted, usr)


def _unlock_host(booted: Deployment) -> Unlocked:
    """On a booted OSTree host the running /usr is ostree's to unlock, as rpm-ostree leaves it to
    `ostree admin unlock`."""
    proc = subprocess.run(["ostree", "admin", "unlock"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StrataError(f"ostree admin unlock failed: {proc.stderr.strip() or proc.returncode}")
    return Unlocked(booted, Path("/usr"))


def _mount_overlay(usr: Path, work: Path) -> None:
    for path in (usr, work):
        if _OPTION_UNSAFE & set(str(path)):
            raise StrataError(f"cannot mount an overlay on a path with ',', ':' or '\\' in it: {path}")
    mode = usr.stat().st_mode & 0o7777
    for name in ("upper", "work"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.chmod(work / name, mode)
    options = f"lowerdir={usr},upperdir={work / 'upper'},workdir={work / 'work'}"
    proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(usr)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise StrataError(f"mounting the /usr overlay failed: {proc.stderr.strip() or proc.returncode}")


def drop_overlays(sysroot: Sysroot) -> None:
    """What a reboot does to unlocked deployments: the overlays go, and with /run their state and changes."""
    for dep in sysroot.deployments():
        usr = sysroot.deployment_dir(dep) / "usr"
        if sysroot.unlocked_state(dep) != "none" and os.path.ismount(usr):
            proc = subprocess.run(["umount", str(usr)], capture_output=True, check=False)
            if proc.returncode != 0:  # busy: a process still uses it; detach it, as a reboot would
                subprocess.run(["umount", "--lazy", str(usr)], capture_output=True, check=True)
