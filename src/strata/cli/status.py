"""`strata status`: the deployments, their packages, the active transaction and automatic updates, as rpm-ostree
prints them (text, `--json`, or `-J EXPR`). In-process it reads the sysroot; through the daemon
(strata.cli.via_daemon) the JSON members, the policy and the cached update come over D-Bus."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from typing import Any

from strata.cli.client import _log, _sysroot, _timestamp, _verb
from strata.cli.common import print_json
from strata.core import client
from strata.core.origin import Origin
from strata.core.pkgdiff import PackageDiff, summary_text
from strata.core.status import (
    AvailableUpdate,
    automatic_updates_line,
    available_update,
    cached_update_record,
    deployment_record,
    jsonpath_query,
    nevras,
    pending_exit_77,
)
from strata.core.transaction import active_transaction
from strata.errors import InvalidInputError
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot

KEY_WIDTH = 23
UPDATE_KEY_WIDTH = 13  # the AvailableUpdate block's key column (`SecAdvisories`)
EXIT_PENDING = 77


def register(sub: object) -> None:
    p = _verb(sub, "status", "Get the version of the booted system")
    p.add_argument("-v", "--verbose", action="store_true", help="Print additional fields (e.g. StateRoot); implies -a")
    p.add_argument("-a", "--advisories", action="store_true", help="Expand advisories listing")
    p.add_argument("--json", action="store_true", help="Output JSON")
    p.add_argument("-J", "--jsonpath", metavar="EXPRESSION", help="Filter JSONPath expression")
    p.add_argument("-b", "--booted", action="store_true", help="Only print the booted deployment")
    p.add_argument("--pending-exit-77", action="store_true", help="If pending deployment available, exit 77")
    p.add_argument("-p", "--pretty", action="store_true", help=argparse.SUPPRESS)  # rpm-ostree's, ignored
    p.set_defaults(func=_status)


@dataclass
class StatusView:
    """What status shows, from the sysroot in-process or from the daemon's properties."""

    sysroot: Sysroot
    deployments: list[dict[str, Any]]  # rpm-ostree's deployment dictionaries, as JSON
    transaction: list[str] | None
    policy: str
    timer_state: str
    cached_update: dict[str, Any] | None  # what automatic `check` cached (strata.daemon.automatic)


def local_view(sysroot: Sysroot) -> StatusView:
    from strata.daemon.automatic import read_cached_update, timer_state
    from strata.daemon.config import config_path, read_config
    booted = sysroot.booted()
    records = [_without_nulls(deployment_record(sysroot, d, booted)) for d in sysroot.deployments()]
    active = active_transaction(sysroot)
    stateroot = booted.stateroot if booted is not None else (records[0]["osname"] if records else "")
    policy = read_config(config_path()).automatic_update_policy
    return StatusView(sysroot, records, None if active is None else [active.title, active.initiator], policy,
                      timer_state() if policy != "none" else "", read_cached_update(sysroot, stateroot))


def _without_nulls(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if value is not None}


def _status(args: argparse.Namespace) -> int:
    return show(args, local_view(_sysroot(args)))


def show(args: argparse.Namespace, view: StatusView) -> int:
    if args.json and args.jsonpath:
        raise InvalidInputError("Cannot specify both --json and --jsonpath")
    records = [d for d in view.deployments if d.get("booted")] if args.booted else view.deployments
    if args.json or args.jsonpath:
        document = {"deployments": records, "transaction": view.transaction,
                    "cached-update": cached_update_record(view.cached_update), "update-driver": None}
        print_json(jsonpath_query(args.jsonpath, document) if args.jsonpath else document)
    else:
        _print_text(args, view)
    return EXIT_PENDING if args.pending_exit_77 and pending_exit_77(view.deployments) else 0


def _print_text(args: argparse.Namespace, view: StatusView) -> None:
    sysroot = view.sysroot
    booted = sysroot.booted()
    deps = sysroot.deployments()
    _log("State: idle" if view.transaction is None else "State: busy")
    policy_line = automatic_updates_line(view.policy, view.timer_state, args.verbose)
    if policy_line:
        _log(policy_line)
    if view.transaction is not None:
        _log(f"Transaction: {view.transaction[0]}")
        if view.transaction[1]:
            _log(f"  Initiator: {view.transaction[1]}")
    if args.booted:
        deps = [d for d in deps if booted is not None and d.key == booted.key]
    _log("BootedDeployment:" if args.booted else "Deployments:")
    records = {r["id"]: r for r in view.deployments}
    context = _Context(sysroot, booted, deps, len(sysroot.stateroots()) > 1, args.verbose,
                       any("live-replaced" in r or "live-inprogress" in r for r in view.deployments))
    update = available_update(view.cached_update)
    shown = False
    for i, dep in enumerate(deps):
        if i:
            _log("")
        for line in _deployment_lines(context, dep, records.get(f"{dep.stateroot}-{dep.name}", {})):
            _log(line)
        shown = shown or (update is not None and _pending_base(context, dep) == update.commit)
    if update is not None and view.policy != "none" and not shown:
        _log("")
        for line in available_update_lines(update, args.verbose):
            _log(line)


def available_update_lines(update: AvailableUpdate, verbose: bool) -> list[str]:
    """rpm-ostree's `AvailableUpdate:` block (key column 13 wide)."""
    lines = ["AvailableUpdate:"]
    if update.new_commit:
        if update.version:
            lines.append(_line("Version", f"{update.version} ({_timestamp(update.timestamp)})", UPDATE_KEY_WIDTH))
        lines.append(_line("Commit", update.commit, UPDATE_KEY_WIDTH))
    if update.diff is not None and not update.diff.empty:
        if verbose:
            lines += _aligned(update.diff, "", UPDATE_KEY_WIDTH)
        else:
            lines.append(_line("Diff", summary_text(update.diff), UPDATE_KEY_WIDTH))
    return lines


@dataclass(frozen=True)
class _Context:
    sysroot: Sysroot
    booted: Deployment | None
    deps: list[Deployment]
    several_stateroots: bool
    verbose: bool
    any_live: bool

    def is_booted(self, dep: Deployment) -> bool:
        return self.booted is not None and dep.key == self.booted.key

    def is_pending(self, dep: Deployment) -> bool:
        """The first deployment of the booted stateroot above the booted one: what the next boot brings."""
        booted = self.booted
        if booted is None or dep.stateroot != booted.stateroot or self.is_booted(dep):
            return False
        keys = [d.key for d in self.deps]
        return booted.key in keys and keys.index(dep.key) < keys.index(booted.key)


def _pending_base(context: _Context, dep: Deployment) -> str | None:
    if not context.is_pending(dep):
        return None
    commit = context.sysroot.repo.load_commit(dep.csum)
    layered = bool(commit.meta("rpmostree.clientlayer", False))
    return commit.parent if layered else dep.csum


def _line(key: str, value: str, width: int = KEY_WIDTH) -> str:
    return f"  {key:>{width}}: {value}"


def _aligned(diff: PackageDiff, prefix: str, width: int = KEY_WIDTH) -> list[str]:
    """The diff as aligned `Upgraded:`/`Downgraded:`/`Removed:`/`Added:` lines (keys with PREFIX, e.g. Live)."""
    lines: list[str] = []
    sections = (("Upgraded", [f"{n.name} {o.evr} -> {n.evr}" for o, n in diff.upgraded]),
                ("Downgraded", [f"{n.name} {o.evr} -> {n.evr}" for o, n in diff.downgraded]),
                ("Removed", [p.nevra for p in diff.removed]), ("Added", [p.nevra for p in diff.added]))
    for title, items in sections:
        for i, item in enumerate(items):
            lines.append(_line(prefix + title, item, width) if i == 0 else f"  {'':>{width}}  {item}")
    return lines


def _grouped(nevras: list[Nevra]) -> str:
    groups: dict[str, list[str]] = {}
    for n in sorted(nevras):
        groups.setdefault(n.evr, []).append(n.name)
    return ", ".join(f"{' '.join(names)} {evr}" for evr, names in groups.items())


def _diff_lines(key: str, diff: PackageDiff | None, verbose: bool) -> list[str]:
    if diff is None or diff.empty:
        return []
    return _aligned(diff, key[:-4] if key.endswith("Diff") else "") if verbose else [_line(key, summary_text(diff))]


def _deployment_lines(context: _Context, dep: Deployment, record: dict[str, Any]) -> list[str]:
    sysroot, verbose = context.sysroot, context.verbose
    repo = sysroot.repo
    origin = Origin.from_keyfile(sysroot.read_origin(dep))
    commit = repo.load_commit(dep.csum)
    layered = bool(commit.meta("rpmostree.clientlayer", False))
    base = repo.load_commit(commit.parent) if layered and commit.parent else commit
    is_booted = context.is_booted(dep)
    index = f" (index: {context.deps.index(dep)})" if verbose else ""
    lines = [f"{'●' if is_booted else ' '} {origin.refspec}{index}"]
    stamp = _timestamp(base.timestamp)
    lines.append(_line("Version", f"{base.version} ({stamp})") if base.version else _line("Timestamp", stamp))
    live = record.get("live-replaced")
    inprogress = record.get("live-inprogress")
    has_live = bool(live or inprogress)
    if layered:
        lines.append(_line("BootedBaseCommit" if has_live else "BaseCommit", commit.parent or ""))
        if verbose or context.any_live:
            lines.append(_line("Commit", dep.csum))
    else:
        lines.append(_line("BootedCommit" if has_live else "Commit", dep.csum))
    lines += _repo_lines(commit.meta("rpmostree.rpmmd-repos")) if verbose else []
    if inprogress:
        lines.append(_line("InterruptedLiveCommit", str(inprogress)))
    if live:
        lines.append(_line("LiveCommit", str(live)))
        lines += _diff_lines("LiveDiff", client.package_diff(repo, dep.csum, str(live)), verbose)
    if verbose and (dep.staged or context.deps.index(dep) == 0):
        lines.append(_line("Staged", "yes" if dep.staged else "no"))
    if verbose or context.several_stateroots:
        lines.append(_line("StateRoot", dep.stateroot))
    if context.is_pending(dep) and context.booted is not None:
        lines += _diff_lines("Diff", client.package_diff(repo, context.booted.csum, dep.csum), verbose)
    lines += _override_lines(commit, origin, verbose)
    active = list(commit.meta("rpmostree.packages") or [])
    if verbose:
        inactive = sorted(set(origin.requested) - set(active))
        if inactive:
            lines.append(_line("InactiveRequests", " ".join(inactive)))
    if active:
        lines.append(_line("LayeredPackages", " ".join(shlex.quote(p) for p in sorted(active, key=str.lower))))
    if origin.requested_local:
        lines.append(_line("LocalPackages", " ".join(e.nevra for e in origin.requested_local)))
    if origin.requested_local_fileoverride:
        lines.append(_line("LocalForcedPackages", " ".join(e.nevra for e in origin.requested_local_fileoverride)))
    if origin.regenerate_initramfs:
        lines.append(_line("Initramfs", " ".join(shlex.quote(a) for a in origin.initramfs_args) or "regenerate"))
    if origin.initramfs_etc:
        lines.append(_line("InitramfsEtc", " ".join(origin.initramfs_etc)))
    if sysroot.is_pinned(dep):
        lines.append(_line("Pinned", "yes"))
    if record.get("unlocked", "none") != "none":
        lines.append(_line("Unlocked", str(record["unlocked"])))
    endoflife = record.get("endoflife")
    if endoflife:
        lines.append(_line("EndOfLife", str(endoflife)))
    return lines


def _repo_lines(repos: Any) -> list[str]:
    """`-v`: the rpm-md repositories a layered commit was built from, as `├─ id (timestamp)` sub-lines."""
    entries = []
    for item in repos or []:
        values = dict(item) if isinstance(item, list) else {}
        ident = getattr(values.get("id"), "value", None)
        stamp = getattr(values.get("timestamp"), "value", None)
        if isinstance(ident, str):
            entries.append(f"{ident} ({_timestamp(stamp)})" if isinstance(stamp, int) else ident)
    pad = " " * (KEY_WIDTH + 4)
    return [f"{pad}{'└─' if i == len(entries) - 1 else '├─'} {entry}" for i, entry in enumerate(entries)]


def _override_lines(commit: Any, origin: Origin, verbose: bool) -> list[str]:
    lines: list[str] = []
    removed = nevras(commit.meta("rpmostree.removed-base-packages"))
    if removed:
        lines.append(_line("RemovedBasePackages", _grouped(removed)))
    if verbose:
        inactive = sorted(set(origin.override_remove) - {n.name for n in removed})
        if inactive:
            lines.append(_line("InactiveBaseRemovals", " ".join(inactive)))
    replaced = commit.meta("rpmostree.replaced-base-packages") or []
    if replaced:
        groups: dict[tuple[str, str], list[str]] = {}
        for new, old in replaced:
            old_n, new_n = nevras([old])[0], nevras([new])[0]
            groups.setdefault((old_n.evr, new_n.evr), []).append(new_n.name)
        lines.append(_line("LocalOverrides", ", ".join(f"{' '.join(sorted(names))} {o} -> {n}"
                                                       for (o, n), names in groups.items())))
    if verbose:
        active = {nevras([new])[0].nevra for new, _old in replaced}
        inactive = sorted(e.nevra for e in origin.override_replace_local if e.nevra not in active)
        if inactive:
            lines.append(_line("InactiveLocalOverrides", " ".join(inactive)))
    return lines
