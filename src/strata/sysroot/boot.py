"""Booting a sysroot that is a directory, and entering a deployment the way the initramfs sets it up."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence

from strata import bwrap
from strata.errors import StrataError
from strata.sysroot import bls, tmpfiles
from strata.sysroot.deploy import finalize_staged
from strata.sysroot.sysroot import BOOTED_CMDLINE, Deployment, Sysroot

Log = Callable[[str], None]


def simulated_boot(sysroot: Sysroot, log: Log) -> Deployment:
    """Shutdown (finalize a staged deployment), then what the boot loader and initramfs do: pick the default
    entry, and record its command line as this sysroot's /proc/cmdline. /run starts empty, as a tmpfs would;
    /var gets what the deployment's tmpfiles.d asks for, as systemd-tmpfiles does early in a real boot."""
    if sysroot.finalization_locked and sysroot.staged_deployment() is not None:
        _discard_locked_staged(sysroot, log)
    else:
        finalize_staged(sysroot, log)
    entries_dir = sysroot.path / "boot" / "loader" / "entries"
    entries = [bls.BlsEntry.load(p) for p in sorted(entries_dir.glob("*.conf"))] if entries_dir.is_dir() else []
    if not entries:
        raise StrataError("nothing to boot: the sysroot has no boot entries (deploy something first)")
    default = bls.sort_entries(entries)[0]
    cmdline = default.get("options") or ""
    dep = next((d for d in sysroot.deployments() if not d.staged), None)
    assert dep is not None
    run = sysroot.path / "run"
    shutil.rmtree(run, ignore_errors=True)
    (run / "strata").mkdir(parents=True)
    (run / "ostree-booted").write_text("")
    (sysroot.path / BOOTED_CMDLINE).write_text(cmdline + "\n")
    (run / "strata" / "booted").write_text(f"{dep.stateroot} {dep.name}\n")
    tmpfiles.apply_to_var(sysroot.deployment_dir(dep), sysroot.stateroot_var(dep.stateroot), log)
    log(f"Booted {default.get('title')}: {dep.stateroot} {dep.name}")
    return dep


def _discard_locked_staged(sysroot: Sysroot, log: Log) -> None:
    """ostree's shutdown with a finalization lock: the staged deployment is not written to the boot entries,
    and /run, where it was recorded, does not survive the reboot."""
    log("Not finalizing; found /run/ostree/staged-deployment-locked")
    listed = [d for d in sysroot.deployments() if not d.staged]
    sysroot.clear_staged_state()
    bootversion = sysroot.bootversion
    sysroot._write_deployment_refs(listed, bootversion, sysroot.subbootversion(bootversion))
    sysroot.cleanup(prune_repo=False)


def sandbox(sysroot: Sysroot, dep: Deployment) -> bwrap.Sandbox:
    """The deployment as / (read-only but for /etc), its stateroot's /var, the physical root at /sysroot and
    /boot. The admin's own command keeps the terminal; it still gets a read-only /proc/sys and the
    capabilities of package scripts only."""
    root = sysroot.deployment_dir(dep)
    return bwrap.Sandbox(
        root=root, root_writable=False, terminal=True, tree_binds=[("etc", "/etc"), *_unlocked_usr(sysroot, dep)],
        binds=[(str(sysroot.stateroot_var(dep.stateroot)), "/var"), (str(sysroot.path), "/sysroot"),
               (str(sysroot.path / "boot"), "/boot")],
        files=[("/run/ostree-booted", b"")], network=True, env={"HOME": "/root", "TERM": "xterm"})


def _unlocked_usr(sysroot: Sysroot, dep: Deployment) -> list[tuple[str, str]]:
    """After `strata usroverlay`, /usr is the writable overlay mounted over the deployment's usr."""
    unlocked = sysroot.unlocked_state(dep) != "none"
    # Only over a mounted overlay: a state left in a directory sysroot's /run after a host reboot must never
    # make the deployment's own usr, hardlinks into the object store, writable.
    return [("usr", "/usr")] if unlocked and os.path.ismount(sysroot.deployment_dir(dep) / "usr") else []


def run_in_deployment(sysroot: Sysroot, dep: Deployment, argv: Sequence[str], *, capture: bool = False) -> int:
    outcome = bwrap.run(sandbox(sysroot, dep), argv, on_line=print if capture else None)
    return outcome.returncode
