"""The rpm-ostree verbs: status, install, uninstall, override, reset, apply-live, upgrade, deploy, rebase,
rollback, kargs, cleanup."""

from __future__ import annotations

import argparse
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strata.cli.common import add_sysroot_option, print_json
from strata.core import client, livefs
from strata.core.db import commit_packages
from strata.core.layering import import_local_rpm, read_base
from strata.core.origin import LocalPackage, Origin
from strata.core.pkgdiff import diff_packages, summary_text
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.gvariant import Variant
from strata.image.transfer import pull_local
from strata.packages.nevra import Nevra
from strata.sysroot import deploy as ops
from strata.sysroot.sysroot import Deployment, Sysroot

KEY_WIDTH = 23


def register(sub: Any) -> None:
    p = _verb(sub, "status", "show the deployments")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-b", "--booted", action="store_true")
    p.set_defaults(func=_status)

    p = _verb(sub, "install", "layer packages on the base")
    p.add_argument("packages", nargs="+")
    p.add_argument("--idempotent", action="store_true")
    p.add_argument("--allow-inactive", action="store_true")
    p.add_argument("-A", "--apply-live", action="store_true")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=_install)

    p = _verb(sub, "uninstall", "remove layered packages")
    p.add_argument("packages", nargs="+")
    p.add_argument("--idempotent", action="store_true")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=_uninstall)

    override = sub.add_parser("override", help="remove or replace base packages")
    verbs = override.add_subparsers(dest="override_verb", metavar="VERB", parser_class=type(override))
    p = _verb(verbs, "remove", "remove base packages")
    p.add_argument("packages", nargs="+")
    p.set_defaults(func=_override_remove)
    p = _verb(verbs, "replace", "replace base packages with local RPMs")
    p.add_argument("packages", nargs="+")
    p.set_defaults(func=_override_replace)
    p = _verb(verbs, "reset", "undo overrides")
    p.add_argument("packages", nargs="*")
    p.add_argument("-a", "--all", action="store_true")
    p.set_defaults(func=_override_reset)

    p = _verb(sub, "reset", "remove all layered packages and overrides")
    p.set_defaults(func=_reset)

    p = _verb(sub, "apply-live", "apply the pending deployment's changes to the running system")
    p.add_argument("--allow-replacement", action="store_true")
    p.set_defaults(func=_apply_live)
    ex = sub.add_parser("ex", help="experimental and legacy verbs")
    ex_verbs = ex.add_subparsers(dest="ex_verb", metavar="VERB", parser_class=type(ex))
    p = _verb(ex_verbs, "livefs", "old name of apply-live")
    p.add_argument("--allow-replacement", action="store_true")
    p.set_defaults(func=_apply_live)

    p = _verb(sub, "refresh-md", "download rpm-md metadata of the deployment's repositories")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=_refresh_md)

    p = _verb(sub, "cancel", "cancel an active transaction")
    p.set_defaults(func=_cancel)

    p = _verb(sub, "upgrade", "update to the newest commit of the origin ref")
    p.add_argument("--check", action="store_true")
    p.add_argument("--preview", action="store_true")
    p.add_argument("--download-only", action="store_true")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=_upgrade)

    p = _verb(sub, "deploy", "deploy a version or commit of the origin ref")
    p.add_argument("revision")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=_deploy)

    p = _verb(sub, "rebase", "switch to another ref")
    p.add_argument("refspec")
    p.add_argument("revision", nargs="?")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=_rebase)

    p = _verb(sub, "rollback", "boot the previous deployment next time")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=_rollback)

    p = _verb(sub, "kargs", "show or change kernel arguments (in a new deployment)")
    p.add_argument("--append", action="append", default=[])
    p.add_argument("--delete", action="append", default=[])
    p.add_argument("--replace", action="append", default=[])
    p.set_defaults(func=_kargs)

    p = _verb(sub, "cleanup", "clear cached and pending data")
    for flag, long in (("-p", "--pending"), ("-r", "--rollback"), ("-b", "--base"), ("-m", "--repomd")):
        p.add_argument(flag, long, action="store_true")
    p.set_defaults(func=_cleanup)


def _verb(sub: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=helptext)
    add_sysroot_option(p)
    p.add_argument("--os", "--stateroot", dest="stateroot", help="operate on this stateroot")
    return p


def _log(line: str) -> None:
    print(line, flush=True)


def _context(args: argparse.Namespace) -> client.Context:
    return client.open_context(Sysroot.open(Path(args.sysroot)), args.stateroot)


def _finish(ctx: client.Context, outcome: client.Outcome, closing: str, reboot: bool = False) -> int:
    client.print_result(ctx, outcome, _log, closing)
    if reboot and outcome.deployment is not None:
        from strata.sysroot.boot import simulated_boot
        with ctx.sysroot.lock():
            livefs.drop_live_changes(ctx.sysroot)
            simulated_boot(ctx.sysroot, _log)
    return 0


# ---------------------------------------------------------------- layering


def _is_local(spec: str) -> bool:
    return spec.endswith(".rpm") or spec.startswith("file://")


def _install(args: argparse.Namespace) -> int:
    if args.apply_live and args.reboot:
        raise InvalidInputError("Cannot specify `apply-live` and `reboot`")
    ctx = _context(args)
    origin = ctx.origin()
    requested = list(origin.requested)
    local = list(origin.requested_local)
    with ctx.sysroot.lock():
        base = client.base_commit(ctx.repo, ctx.origin_merge.csum)
        base_pkgs = commit_packages(ctx.repo, base)
        for spec in args.packages:
            if _is_local(spec):
                sha, nevra = import_local_rpm(ctx.repo, Path(spec.removeprefix("file://")))
                if any(entry.sha256 == sha for entry in local):
                    raise InvalidInputError(f"Package '{nevra}' is already layered")
                if nevra in base_pkgs:
                    raise InvalidInputError(f"Package '{nevra}' is already in the base")
                local.append(LocalPackage(sha, nevra.nevra))
                continue
            if spec in requested:
                if args.idempotent:
                    continue
                raise InvalidInputError(f"Package/capability '{spec}' is already requested")
            if not args.allow_inactive:
                _refuse_provided_by_base(ctx, base, spec)
            requested.append(spec)
        new_origin = origin.evolve(requested=tuple(requested), requested_local=tuple(local))
        outcome = client.transact(ctx, new_origin, _log)
    if args.apply_live and outcome.deployment is not None:
        return _do_apply_live(ctx.sysroot, False)
    return _finish(ctx, outcome, client.QUEUED_HINT, args.reboot)


def _refuse_provided_by_base(ctx: client.Context, base: str, spec: str) -> None:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="strata-base-", dir=ctx.repo.tmp_dir) as tmp:
        info = read_base(ctx.repo, base, Path(tmp))
    providers = [p.nevra for p in info.packages if spec == p.nevra.name or spec in p.provides or spec in p.files]
    if providers:
        names = "".join(f" {p.nevra}" for p in providers)
        raise InvalidInputError(f'"{spec}" is already provided by:{names}. Use --allow-inactive to explicitly '
                                "require it.")


def _uninstall(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    requested = list(origin.requested)
    local = list(origin.requested_local)
    for spec in args.packages:
        matches_local = [e for e in local if e.nevra == spec or Nevra.parse(e.nevra).name == spec]
        if spec in requested:
            requested.remove(spec)
        elif matches_local:
            local = [e for e in local if e not in matches_local]
        elif not args.idempotent:
            raise InvalidInputError(f"Package/capability '{spec}' is not currently requested")
    with ctx.sysroot.lock():
        outcome = client.transact(ctx, origin.evolve(requested=tuple(requested), requested_local=tuple(local)), _log)
    return _finish(ctx, outcome, client.QUEUED_HINT, args.reboot)


def _override_remove(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    base = commit_packages(ctx.repo, client.base_commit(ctx.repo, ctx.origin_merge.csum))
    removals = list(origin.override_remove)
    for name in args.packages:
        if name in removals:
            raise InvalidInputError(f"Override already exists for package '{name}'")
        if not any(p.name == name for p in base):
            raise InvalidInputError(f'Package "{name}" not found')
        removals.append(name)
    with ctx.sysroot.lock():
        outcome = client.transact(ctx, origin.evolve(override_remove=tuple(removals)), _log)
    return _finish_override(ctx, outcome)


def _override_replace(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    base = commit_packages(ctx.repo, client.base_commit(ctx.repo, ctx.origin_merge.csum))
    replacements = list(origin.override_replace_local)
    with ctx.sysroot.lock():
        for spec in args.packages:
            if not _is_local(spec):
                raise InvalidInputError("Non-local replacement overrides not implemented yet")
            sha, nevra = import_local_rpm(ctx.repo, Path(spec.removeprefix("file://")))
            if not any(p.name == nevra.name for p in base):
                raise InvalidInputError(f"Package {nevra} doesn't replace a package of the same name")
            if any(Nevra.parse(e.nevra).name == nevra.name for e in replacements):
                raise InvalidInputError(f"Override already exists for package '{nevra.name}'")
            replacements.append(LocalPackage(sha, nevra.nevra))
        outcome = client.transact(ctx, origin.evolve(override_replace_local=tuple(replacements)), _log)
    return _finish_override(ctx, outcome)


def _finish_override(ctx: client.Context, outcome: client.Outcome) -> int:
    if outcome.deployment is not None:
        client.print_result(ctx, outcome, _log, 'Use "rpm-ostree override reset" to undo overrides')
        _log(client.REBOOT_HINT)
    return 0


def _override_reset(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    if args.all:
        new = origin.evolve(override_remove=(), override_replace_local=())
    else:
        removals = list(origin.override_remove)
        replacements = list(origin.override_replace_local)
        for name in args.packages:
            matched = [e for e in replacements if Nevra.parse(e.nevra).name == name or e.nevra == name]
            if name in removals:
                removals.remove(name)
            elif matched:
                replacements = [e for e in replacements if e not in matched]
            else:
                raise InvalidInputError(f"No overrides for package '{name}'")
        new = origin.evolve(override_remove=tuple(removals), override_replace_local=tuple(replacements))
    with ctx.sysroot.lock():
        outcome = client.transact(ctx, new, _log)
    return _finish(ctx, outcome, client.REBOOT_HINT)


def _reset(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    new = Origin(origin.refspec, origin.override_commit, extra=origin.extra)
    with ctx.sysroot.lock():
        outcome = client.transact(ctx, new, _log)
    return _finish(ctx, outcome, client.QUEUED_HINT)


# ---------------------------------------------------------------- apply-live


def _apply_live(args: argparse.Namespace) -> int:
    return _do_apply_live(Sysroot.open(Path(args.sysroot)), args.allow_replacement)


def _do_apply_live(sysroot: Sysroot, allow_replacement: bool) -> int:
    booted = sysroot.booted()
    if booted is None:
        raise StrataError("apply-live needs a booted system (run `strata admin boot` first)")
    deps = sysroot.deployments()
    index = next(i for i, d in enumerate(deps) if d.key == booted.key)
    pending = next((d for d in deps[:index] if d.stateroot == booted.stateroot), None)
    if pending is None:
        raise StrataError("No target commit specified and no pending deployment")
    with sysroot.lock():
        before = livefs.live_commit(sysroot, booted) or booted.csum
        livefs.apply_live(sysroot, booted, pending.csum, _log, allow_replacement=allow_replacement)
        diff = diff_packages(commit_packages(sysroot.repo, before), commit_packages(sysroot.repo, pending.csum))
        from strata.core.pkgdiff import block_lines
        for line in block_lines(diff):
            _log(line)
    return 0


# ---------------------------------------------------------------- base changes


def _pull_ref(ctx: client.Context, refspec: str, depth: int = 0, *, history_only: bool = False) -> str:
    """Fetch refspec's newest commit into the sysroot repo (file:// remotes; HTTP needs `strata repo pull`)."""
    remote, _, ref = refspec.rpartition(":")
    repo = ctx.repo
    if remote:
        url = repo.config.get(f'remote "{remote}"', "url")
        if url and url.startswith(("file://", "/")):
            from strata.image.repo import Repo
            pull_local(Repo.open(Path(url.removeprefix("file://"))), repo, [ref], remote=remote, depth=depth)
        elif url and url.startswith(("http://", "https://")):
            from strata.image.pull import PullOptions, pull
            _log("Receiving objects...")
            stats = pull(repo, remote, [ref], PullOptions(depth=depth, commit_metadata_only=history_only))
            _log(f"Receiving objects: {stats.fetched_objects} ({stats.fetched_bytes} bytes)... done")
    commit = repo.resolve_rev(refspec, allow_missing=True)
    if commit is None:
        raise NotFoundError(f"refspec {refspec} not found")
    return commit


def _fetch_full_commit(ctx: client.Context, refspec: str, commit: str) -> None:
    """After a history walk over HTTP fetched commit objects only, fetch the chosen commit's tree."""
    remote = refspec.rpartition(":")[0]
    url = ctx.repo.config.get(f'remote "{remote}"', "url") if remote else None
    if url and url.startswith(("http://", "https://")):
        from strata.image.pull import pull
        pull(ctx.repo, remote, [commit])


def _upgrade(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    with ctx.sysroot.lock():
        if ":" not in origin.refspec and len(origin.refspec) == 64:
            _log("Pinned to commit; no upgrade available")
            return 0
        new_base = _pull_ref(ctx, origin.refspec)
        current_base = client.base_commit(ctx.repo, ctx.origin_merge.csum)
        if args.check or args.preview:
            if new_base == current_base:
                _log("No updates available.")
                return 77
            _print_available(ctx, current_base, new_base, args.preview)
            return 0
        if args.download_only:
            _log("Update downloaded.")
            return 0
        new_origin = origin.evolve(override_commit=None)
        if new_base == current_base and new_origin == origin:
            outcome = client.transact(ctx, new_origin, _log, base=new_base)
            if outcome.deployment is None:
                _log("No upgrade available.")
                return 0
        else:
            outcome = client.transact(ctx, new_origin, _log, base=new_base)
    return _finish(ctx, outcome, client.REBOOT_HINT, args.reboot)


def _print_available(ctx: client.Context, old: str, new: str, preview: bool) -> None:
    commit = ctx.repo.load_commit(new)
    _log("AvailableUpdate:")
    if commit.version:
        _log(f"        Version: {commit.version} ({_timestamp(commit.timestamp)})")
    _log(f"         Commit: {new}")
    diff = diff_packages(commit_packages(ctx.repo, old), commit_packages(ctx.repo, new))
    if preview:
        from strata.core.pkgdiff import aligned_lines
        for line in aligned_lines(diff, 13):
            _log(line)
    else:
        _log(f"           Diff: {summary_text(diff)}")


def _find_in_history(ctx: client.Context, refspec: str, revision: str) -> str:
    head = _pull_ref(ctx, refspec, depth=1000, history_only=True)
    from strata.image.traverse import history
    is_checksum = len(revision) == 64 or revision.startswith("revision=")
    wanted = revision.removeprefix("revision=").removeprefix("version=")
    for commit in history(ctx.repo, head):
        if (is_checksum and commit == wanted) or (not is_checksum and ctx.repo.load_commit(commit).version == wanted):
            _fetch_full_commit(ctx, refspec, commit)
            return commit
    if is_checksum:
        raise NotFoundError(f"Checksum {wanted} not found in {refspec}")
    raise NotFoundError(f"Version {wanted} not found in {refspec}")


def _deploy(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    with ctx.sysroot.lock():
        if len(origin.refspec) == 64 and ":" not in origin.refspec and not len(args.revision) == 64:
            raise StrataError("Cannot look up version while pinned to commit")
        if not (len(args.revision) == 64 or args.revision.startswith("revision=")):
            _log(f"Resolving version '{args.revision.removeprefix('version=')}'")
        target = _find_in_history(ctx, origin.refspec, args.revision)
        outcome = client.transact(ctx, origin.evolve(override_commit=target), _log, base=target)
    return _finish(ctx, outcome, client.REBOOT_HINT, args.reboot)


def _rebase(args: argparse.Namespace) -> int:
    ctx = _context(args)
    origin = ctx.origin()
    refspec = args.refspec.removeprefix("ostree://")
    if not refspec:
        raise InvalidInputError("Refspec is empty")
    old_remote = origin.refspec.rpartition(":")[0]
    if ":" not in refspec and old_remote:
        refspec = f"{old_remote}:{refspec}"
    elif refspec.endswith(":"):
        refspec = refspec + origin.refspec.rpartition(":")[2]
    if refspec == origin.refspec and not args.revision:
        raise InvalidInputError(f"Old and new refs are equal: {refspec}")
    with ctx.sysroot.lock():
        base = _find_in_history(ctx, refspec, args.revision) if args.revision else _pull_ref(ctx, refspec)
        new_origin = origin.evolve(refspec=refspec, override_commit=base if args.revision else None)
        outcome = client.transact(ctx, new_origin, _log, base=base)
    return _finish(ctx, outcome, client.QUEUED_HINT, args.reboot)


def _rollback(args: argparse.Namespace) -> int:
    sysroot = Sysroot.open(Path(args.sysroot))
    booted = sysroot.booted()
    with sysroot.lock():
        target = ops.rollback(sysroot, _log)
    if booted is not None:
        from strata.core.pkgdiff import block_lines
        diff = diff_packages(commit_packages(sysroot.repo, booted.csum), commit_packages(sysroot.repo, target.csum))
        for line in block_lines(diff):
            _log(line)
    _log(client.REBOOT_HINT)
    if args.reboot:
        from strata.sysroot.boot import simulated_boot
        with sysroot.lock():
            livefs.drop_live_changes(sysroot)
            simulated_boot(sysroot, _log)
    return 0


def _kargs(args: argparse.Namespace) -> int:
    ctx = _context(args)
    edits = ops.KargEdits(replace=args.replace, append=args.append, delete=args.delete)
    if edits.empty:
        dep = ctx.booted if ctx.booted is not None and not ctx.is_guest else ctx.origin_merge
        _log(" ".join(dep.kargs))
        return 0
    with ctx.sysroot.lock():
        outcome = client.transact(ctx, ctx.origin(), _log, kargs=edits, force_new=True)
    if outcome.deployment is not None:
        _log("Kernel arguments updated.")
    return _finish(ctx, outcome, client.QUEUED_HINT)


def _cleanup(args: argparse.Namespace) -> int:
    if not (args.pending or args.rollback or args.base or args.repomd):
        raise InvalidInputError("cleanup: At least one cleanup option must be specified")
    sysroot = Sysroot.open(Path(args.sysroot))
    with sysroot.lock():
        booted = sysroot.booted()
        deps = sysroot.deployments()
        stateroot = args.stateroot or (booted.stateroot if booted else (deps[0].stateroot if deps else ""))
        index = next((i for i, d in enumerate(deps) if booted is not None and d.key == booted.key), 0)
        drop = set()
        for i, dep in enumerate(deps):
            if dep.stateroot != stateroot or sysroot.is_pinned(dep) or (booted and dep.key == booted.key):
                continue
            if (args.pending and i < index) or (args.rollback and i > index):
                drop.add(dep.key)
        if args.pending or args.rollback:
            if not drop:
                _log("Deployments unchanged.")
            else:
                if any(d.staged for d in deps if d.key in drop):
                    sysroot.clear_staged_state()
                sysroot.write_deployments([d for d in deps if not d.staged and d.key not in drop])
        if args.base or drop:
            sysroot.cleanup(prune_repo=True)
        if args.repomd:
            import shutil
            shutil.rmtree(sysroot.repo.path / "extensions" / "strata" / "cache" / "rpmmd", ignore_errors=True)
    return 0


def _refresh_md(args: argparse.Namespace) -> int:
    ctx = _context(args)
    from strata.packages.sources import open_repositories
    repos_dir = ctx.sysroot.deployment_dir(ctx.etc_merge) / "etc" / "yum.repos.d"
    if not repos_dir.is_dir():
        _log("No enabled rpm-md repositories.")
        return 0
    open_repositories(repos_dir, None, ctx.cachedir / "rpmmd", _log, force=args.force)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    sysroot = Sysroot.open(Path(args.sysroot))
    try:
        with sysroot.lock():
            _log("No active transaction.")
    except StrataError:
        raise StrataError("a transaction holds the sysroot lock; strata runs transactions in the foreground, "
                          "interrupt that process to cancel it") from None
    return 0


# ---------------------------------------------------------------- status


def _timestamp(value: int) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(key: str, value: str) -> str:
    return f"  {key:>{KEY_WIDTH}}: {value}"


def _nevras(value: Any) -> list[Nevra]:
    result = []
    for item in value or []:
        inner = item.value if isinstance(item, Variant) else item
        nevra_tuple = inner[0].value if isinstance(inner, tuple) and isinstance(inner[0], Variant) else inner
        _text, name, epoch, version, release, arch = nevra_tuple
        result.append(Nevra(name, epoch, version, release, arch))
    return result


def _grouped(nevras: list[Nevra]) -> str:
    groups: dict[str, list[str]] = {}
    for n in sorted(nevras):
        groups.setdefault(n.evr, []).append(n.name)
    return ", ".join(f"{' '.join(names)} {evr}" for evr, names in groups.items())


def _status(args: argparse.Namespace) -> int:
    sysroot = Sysroot.open(Path(args.sysroot))
    booted = sysroot.booted()
    deps = sysroot.deployments()
    if args.booted:
        deps = [d for d in deps if booted is not None and d.key == booted.key]
    if args.json:
        print_json({"deployments": [_json_deployment(sysroot, d, booted) for d in deps], "transaction": None,
                    "cached-update": None, "update-driver": None})
        return 0
    _log("State: idle")
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
        live_diff = diff_packages(commit_packages(repo, dep.csum), commit_packages(repo, live))
        lines.append(_line("LiveDiff", summary_text(live_diff)))
    if verbose:
        lines.append(_line("Staged", "yes" if dep.staged else "no"))
    if verbose or several:
        lines.append(_line("StateRoot", dep.stateroot))
    pending = booted is not None and not is_booted and dep.stateroot == booted.stateroot and \
        deps.index(dep) < deps.index(next(d for d in deps if d.key == booted.key))
    if pending and booted is not None:
        try:
            summary = summary_text(diff_packages(commit_packages(repo, booted.csum), commit_packages(repo, dep.csum)))
            if summary:
                lines.append(_line("Diff", summary))
        except StrataError:
            pass
    removed = _nevras(commit.meta("rpmostree.removed-base-packages"))
    if removed:
        lines.append(_line("RemovedBasePackages", _grouped(removed)))
    replaced = commit.meta("rpmostree.replaced-base-packages") or []
    if replaced:
        groups: dict[tuple[str, str], list[str]] = {}
        for new, old in replaced:
            old_n, new_n = _nevras([old])[0], _nevras([new])[0]
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


def _json_deployment(sysroot: Sysroot, dep: Deployment, booted: Deployment | None) -> dict[str, Any]:
    repo = sysroot.repo
    origin = Origin.from_keyfile(sysroot.read_origin(dep))
    commit = repo.load_commit(dep.csum)
    layered = bool(commit.meta("rpmostree.clientlayer", False))
    data: dict[str, Any] = {
        "id": f"{dep.stateroot}-{dep.name}", "osname": dep.stateroot, "serial": dep.serial, "checksum": dep.csum,
        "booted": booted is not None and dep.key == booted.key, "staged": dep.staged,
        "pinned": sysroot.is_pinned(dep), "unlocked": "none", "origin": origin.refspec,
        "version": commit.version, "timestamp": commit.timestamp,
        "packages": list(commit.meta("rpmostree.packages") or []),
        "base-removals": [[n.nevra, n.name, n.epoch, n.version, n.release, n.arch]
                          for n in _nevras(commit.meta("rpmostree.removed-base-packages"))],
        "base-local-replacements": [],
        "requested-packages": list(origin.requested),
        "requested-local-packages": [e.nevra for e in origin.requested_local],
        "requested-base-removals": list(origin.override_remove),
        "requested-base-local-replacements": [e.nevra for e in origin.override_replace_local],
        "regenerate-initramfs": origin.regenerate_initramfs,
    }
    if layered and commit.parent:
        base = repo.load_commit(commit.parent)
        data.update({"base-checksum": commit.parent, "base-version": base.version, "base-timestamp": base.timestamp})
    live = livefs.live_commit(sysroot, dep)
    if live:
        data["live-replaced"] = live
    return data
