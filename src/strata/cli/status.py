"""`strata status`: the deployments, their packages and the active transaction, as rpm-ostree prints them."""

from __future__ import annotations

import argparse
import shlex

from strata.cli.client import _log, _sysroot, _timestamp, _verb
from strata.cli.common import print_json
from strata.core import client, livefs
from strata.core.origin import Origin
from strata.core.pkgdiff import summary_text
from strata.core.status import deployment_record, nevras
from strata.core.transaction import active_transaction
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot

KEY_WIDTH = 23


def register(sub: object) -> None:
    p = _verb(sub, "status", "show the deployments")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-b", "--booted", action="store_true")
    p.set_defaults(func=_status)


def _line(key: str, value: str) -> str:
    return f"  {key:>{KEY_WIDTH}}: {value}"


def _grouped(nevras: list[Nevra]) -> str:
    groups: dict[str, list[str]] = {}
    for n in sorted(nevras):
        groups.setdefault(n.evr, []).append(n.name)
    return ", ".join(f"{' '.join(names)} {evr}" for evr, names in groups.items())


def _status(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    booted = sysroot.booted()
    deps = sysroot.deployments()
    active = active_transaction(sysroot)
    if args.booted:
        deps = [d for d in deps if booted is not None and d.key == booted.key]
    if args.json:
        transaction = None if active is None else [active.title, active.initiator]
        print_json({"deployments": [deployment_record(sysroot, d, booted) for d in deps],
                    "transaction": transaction, "cached-update": None, "update-driver": None})
        return 0
    if active is None:
        _log("State: idle")
    else:
        _log("State: busy")
        _log(f"Transaction: {active.title}")
        _log(f"  Initiator: {active.initiator}")
    _log("BootedDeployment:" if args.booted else "Deployments:")
    several = len(sysroot.stateroots()) > 1
    for i, dep in enumerate(deps):
        if i:
            _log("")
        for line in _deployment_lines(sysroot, dep, booted, deps, verbose=args.verbose, several=several):
            _log(line)
    return 0


def _deployment_lines(sysroot: Sysroot, dep: Deployment, booted: Deployment | None, deps: list[Deployment], *,
                      verbose: bool, several: bool) -> list[str]:
    repo = sysroot.repo
    origin = Origin.from_keyfile(sysroot.read_origin(dep))
    commit = repo.load_commit(dep.csum)
    layered = bool(commit.meta("rpmostree.clientlayer", False))
    base = repo.load_commit(commit.parent) if layered and commit.parent else commit
    is_booted = booted is not None and dep.key == booted.key
    marker = "●" if is_booted else " "
    index = f" (index: {deps.index(dep)})" if verbose else ""
    lines = [f"{marker} {origin.refspec}{index}"]
    stamp = _timestamp(base.timestamp)
    lines.append(_line("Version", f"{base.version} ({stamp})") if base.version else _line("Timestamp", stamp))
    live = livefs.live_commit(sysroot, dep) if is_booted else None
    if layered:
        lines.append(_line("BootedBaseCommit" if live else "BaseCommit", commit.parent or ""))
        if verbose or live:
            lines.append(_line("BootedCommit" if live else "Commit", dep.csum))
    else:
        lines.append(_line("BootedCommit" if live else "Commit", dep.csum))
    if live:
        lines.append(_line("LiveCommit", live))
        live_diff = client.package_diff(repo, dep.csum, live)
        if live_diff is not None:
            lines.append(_line("LiveDiff", summary_text(live_diff)))
    if verbose:
        lines.append(_line("Staged", "yes" if dep.staged else "no"))
    if verbose or several:
        lines.append(_line("StateRoot", dep.stateroot))
    pending = booted is not None and not is_booted and dep.stateroot == booted.stateroot and \
        deps.index(dep) < deps.index(next(d for d in deps if d.key == booted.key))
    pending_diff = client.package_diff(repo, booted.csum, dep.csum) if pending and booted is not None else None
    if pending_diff is not None and summary_text(pending_diff):
        lines.append(_line("Diff", summary_text(pending_diff)))
    removed = nevras(commit.meta("rpmostree.removed-base-packages"))
    if removed:
        lines.append(_line("RemovedBasePackages", _grouped(removed)))
    replaced = commit.meta("rpmostree.replaced-base-packages") or []
    if replaced:
        groups: dict[tuple[str, str], list[str]] = {}
        for new, old in replaced:
            old_n, new_n = nevras([old])[0], nevras([new])[0]
            groups.setdefault((old_n.evr, new_n.evr), []).append(new_n.name)
        lines.append(_line("LocalOverrides", ", ".join(f"{' '.join(sorted(names))} {o} -> {n}"
                                                       for (o, n), names in groups.items())))
    active = list(commit.meta("rpmostree.packages") or [])
    if verbose:
        inactive = sorted(set(origin.requested) - set(active))
        if inactive:
            lines.append(_line("InactiveRequests", " ".join(inactive)))
    if active:
        lines.append(_line("LayeredPackages", " ".join(shlex.quote(p) for p in sorted(active, key=str.lower))))
    if origin.requested_local:
        lines.append(_line("LocalPackages", " ".join(e.nevra for e in origin.requested_local)))
    if sysroot.is_pinned(dep):
        lines.append(_line("Pinned", "yes"))
    return lines
