"""Booting a sysroot that is a directory, and entering a deployment the way the initramfs sets it up."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence

from strata import bwrap
from strata.errors import StrataError
from strata.sysroot import bls
from strata.sysroot.deploy import finalize_staged
from strata.sysroot.sysroot import BOOTED_CMDLINE, Deployment, Sysroot

Log = Callable[[str], None]


def simulated_boot(sysroot: Sysroot, log: Log) -> Deployment:
    """Shutdown (finalize a staged deployment), then what the boot loader and initramfs do: pick the default
    entry, and record its command line as this sysroot's /proc/cmdline. /run starts empty, as a tmpfs would."""
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
    log(f"Booted {default.get('title')}: {dep.stateroot} {dep.name}")
    return dep


def sandbox(sysroot: Sysroot, dep: Deployment) -> bwrap.Sandbox:
    """The deployment as / (read-only but for /etc), its stateroot's /var, the physical root at /sysroot and
    /boot. The admin's own command keeps the terminal; it still gets a read-only /proc/sys and the
    capabilities of package scripts only."""
    root = sysroot.deployment_dir(dep)
    return bwrap.Sandbox(
        root=root, root_writable=False, terminal=True, tree_binds=[("etc", "/etc")],
        binds=[(str(sysroot.stateroot_var(dep.stateroot)), "/var"), (str(sysroot.path), "/sysroot"),
               (str(sysroot.path / "boot"), "/boot")],
        files=[("/run/ostree-booted", b"")], network=True, env={"HOME": "/root", "TERM": "xterm"})


def run_in_deployment(sysroot: Sysroot, dep: Deployment, argv: Sequence[str], *, capture: bool = False) -> int:
    outcome = bwrap.run(sandbox(sysroot, dep), argv, on_line=print if capture else None)
    return outcome.returncode
