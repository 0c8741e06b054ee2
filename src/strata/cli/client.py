"""The rpm-ostree verbs: status, install, uninstall, override, reset, apply-live, upgrade, deploy, rebase,
rollback, kargs, cleanup."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strata.cli import live
from strata.cli.common import add_sysroot_option, open_sysroot
from strata.cli.progress import make_progress
from strata.core import client
from strata.core import upgrade as upgrades
from strata.core.pkgdiff import PackageDiff, aligned_lines, block_lines, summary_text
from strata.core.repos import RepoOptions
from strata.core.transaction import Progress, SilentProgress, cancel_active
from strata.errors import InvalidInputError
from strata.sysroot import deploy as ops
from strata.sysroot.sysroot import Sysroot

KEY_WIDTH = 23


STATEROOT_HELP = "Operate on provided STATEROOT"
REBOOT_HELP = "Initiate a reboot after operation is complete"
DRY_RUN_HELP = "Exit after printing the transaction"
CACHE_ONLY_HELP = "Do not download latest ostree and RPM data"
DOWNLOAD_ONLY_HELP = "Just download latest ostree and RPM data, don't deploy"
LOCK_HELP = "Prevent automatic deployment finalization on shutdown"
UNCHANGED_HELP = "If no new deployment made, exit 77"


def register(sub: Any) -> None:
    _register_packages(sub)
    _register_overrides(sub)
    _register_base_changes(sub)
    _register_other(sub)


def _register_packages(sub: Any) -> None:
    for name, aliases in (("install", ["pkg-add"]),):
        p = _verb(sub, name, "Overlay additional packages", aliases)
        p.add_argument("packages", nargs="*", metavar="PACKAGE", help="package names, capabilities or local RPMs")
        _change_options(p, dry_run=True, install=False)
        p.add_argument("--idempotent", action="store_true", help="Do nothing if package already (un)installed")
        p.add_argument("--allow-inactive", action="store_true", help="Allow inactive package requests")
        p.add_argument("-A", "--apply-live", action="store_true",
                       help="Apply changes to both pending deployment and running filesystem tree")
        p.add_argument("--force-replacefiles", action="store_true",
                       help="Allow package to replace files from other packages")
        _repo_options(p)
        p.set_defaults(func=_install)
    p = _verb(sub, "uninstall", "Remove overlayed additional packages", ["pkg-remove", "remove"])
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="layered packages to remove")
    _change_options(p, dry_run=True, uninstall=False)
    p.add_argument("--idempotent", action="store_true", help="Do nothing if package already (un)installed")
    p.add_argument("--all", action="store_true", help="Remove all overlayed additional packages")
    p.set_defaults(func=_uninstall)
    p = _verb(sub, "search", "Search for packages")
    p.add_argument("terms", nargs="+", metavar="TERM", help="words the package name or summary contain")
    _repo_options(p)
    p.set_defaults(func=_search)


def _register_overrides(sub: Any) -> None:
    override = sub.add_parser("override", help="Manage base package overrides",
                              description="Manage base package overrides")
    verbs = override.add_subparsers(dest="override_verb", metavar="VERB", parser_class=type(override))
    p = _verb(verbs, "remove", "Remove packages from the base layer")
    p.add_argument("packages", nargs="+", metavar="PACKAGE", help="base packages to remove")
    p.add_argument("--replace", action="append", default=[], metavar="RPM", help="Replace a package")
    _change_options(p, dry_run=True, download=False)
    p.set_defaults(func=_override_remove)
    p = _verb(verbs, "replace", "Replace packages in the base layer")
    p.add_argument("packages", nargs="+", metavar="PACKAGE", help="local RPMs (or, with --from, package names)")
    p.add_argument("--remove", action="append", default=[], metavar="PKG", help="Remove a package")
    p.add_argument("--experimental", action="store_true", help="Allow experimental options such as --from")
    p.add_argument("--from", dest="source", metavar="KIND=NAME",
                   help="Source of override (repo=NAME: the newest build in that rpm-md repository)")
    p.add_argument("--freeze", action="store_true", help="Pin packages to versions found")
    _change_options(p, dry_run=True, download=False)
    p.set_defaults(func=_override_replace)
    p = _verb(verbs, "reset", "Reset currently active package overrides")
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="packages whose overrides to drop")
    p.add_argument("-a", "--all", action="store_true", help="Reset all active overrides")
    _change_options(p, dry_run=True, download=False)
    p.set_defaults(func=_override_reset)

    p = _verb(sub, "reset", "Remove all mutations")
    p.add_argument("-l", "--overlays", action="store_true", help="Remove all overlayed packages")
    p.add_argument("-o", "--overrides", action="store_true", help="Remove all overrides")
    p.add_argument("-i", "--initramfs", action="store_true", help="Stop regenerating initramfs or tracking files")
    _change_options(p)
    p.set_defaults(func=_reset)


def _register_base_changes(sub: Any) -> None:
    p = _verb(sub, "upgrade", "Perform a system upgrade", ["update"])
    p.add_argument("--allow-downgrade", action="store_true", help="Permit deployment of chronologically older trees")
    p.add_argument("--preview", action="store_true",
                   help="Just preview package differences (implies --unchanged-exit-77)")
    p.add_argument("--check", action="store_true",
                   help="Just check if an upgrade is available (implies --unchanged-exit-77)")
    p.add_argument("--trigger-automatic-update-policy", action="store_true",
                   help="For automated use only; triggered by automatic timer")
    _change_options(p)
    p.set_defaults(func=_upgrade)

    p = _verb(sub, "deploy", "Deploy a specific commit")
    p.add_argument("revision", metavar="REVISION", help="a version, a commit checksum, revision=CHECKSUM or "
                   "version=VERSION of the origin ref's history")
    p.add_argument("--preview", action="store_true", help="Just preview package differences")
    p.add_argument("--disallow-downgrade", action="store_true", help="Forbid deployment of chronologically older trees")
    _change_options(p)
    p.set_defaults(func=_deploy)

    p = _verb(sub, "rebase", "Switch to a different tree")
    p.add_argument("refspec", nargs="?", metavar="REFSPEC", help="[REMOTE:]REF to switch to")
    p.add_argument("revision", nargs="?", metavar="REVISION", help="a version or commit of the new ref")
    p.add_argument("-b", "--branch", metavar="BRANCH", help="Rebase to branch BRANCH; use --remote to change remote "
                   "as well")
    p.add_argument("-m", "--remote", metavar="REMOTE", help="Rebase to current branch name using REMOTE; may also "
                   "be combined with --branch")
    p.add_argument("--skip-purge", action="store_true", help="Keep previous refspec after rebase")
    p.add_argument("--custom-origin-url", metavar="URL", help="Machine-readable description of custom origin")
    p.add_argument("--custom-origin-description", metavar="TEXT", help="Human-readable description of custom origin")
    p.add_argument("--experimental", action="store_true", help="Enable experimental features")
    p.add_argument("--disallow-downgrade", action="store_true", help="Forbid deployment of chronologically older trees")
    _change_options(p)
    p.set_defaults(func=_rebase)

    p = _verb(sub, "kargs", "Query or modify kernel arguments")
    p.add_argument("--append", action="append", default=[], metavar="KEY=VALUE",
                   help="Append kernel argument; useful with e.g. console= that can be used multiple times")
    p.add_argument("--replace", action="append", default=[], metavar="KEY=VALUE=NEWVALUE",
                   help="Replace existing kernel argument")
    p.add_argument("--delete", action="append", default=[], metavar="KEY=VALUE",
                   help="Delete a specific kernel argument key/val pair or an entire argument with a single value")
    p.add_argument("--append-if-missing", action="append", default=[], metavar="KEY=VALUE",
                   help="Like --append, but does nothing if the key is already present")
    p.add_argument("--delete-if-present", action="append", default=[], metavar="KEY=VALUE",
                   help="Like --delete, but does nothing if the key is already missing")
    p.add_argument("--deploy-index", type=int, metavar="INDEX", help="Modify the kernel args from a specific "
                   "deployment based on index (0 is the first deployment in the list)")
    p.add_argument("--import-proc-cmdline", action="store_true", help="Instead of modifying old kernel arguments, "
                   "modify args from the booted deployment's command line")
    p.add_argument("--editor", action="store_true", help="Use an editor to modify the kernel arguments")
    p.add_argument("--unchanged-exit-77", action="store_true", help="If no kernel args changed, exit 77")
    p.add_argument("--lock-finalization", action="store_true", help=LOCK_HELP)
    p.add_argument("-r", "--reboot", action="store_true", help=REBOOT_HELP)
    p.set_defaults(func=_kargs)

    p = _verb(sub, "rollback", "Revert to the previously booted tree")
    p.add_argument("-r", "--reboot", action="store_true", help=REBOOT_HELP)
    p.set_defaults(func=_rollback)


def _register_other(sub: Any) -> None:
    ex = sub.add_parser("ex", help="Experimental commands that may change or be removed in the future")
    ex_verbs = ex.add_subparsers(dest="ex_verb", metavar="VERB", parser_class=type(ex))
    for name in ("livefs", "apply-live"):  # `apply-live` itself is cli.live's verb
        live.add_apply_live_options(_verb(ex_verbs, name, live.HELP))
    p = _verb(ex_verbs, "history", "Inspect the transaction history of the system")
    p.add_argument("-n", "--limit", type=int, default=3, metavar="N",
                   help="Limit number of entries to output (default: 3; 0: all)")
    p.set_defaults(func=_history)

    p = _verb(sub, "usroverlay", "Apply a transient overlayfs to /usr", ["unlock"])
    p.add_argument("--transient", action="store_true", help="The overlay is dropped at the next boot (the default)")
    p.set_defaults(func=_usroverlay)

    p = _verb(sub, "finalize-deployment", "Unset the finalization locking state of the staged deployment and reboot")
    p.add_argument("checksum", nargs="?", metavar="CHECKSUM", help="the staged deployment's expected base commit")
    p.add_argument("--allow-missing-checksum", action="store_true",
                   help="Don't error out if no expected checksum is provided")
    p.add_argument("--allow-unlocked", action="store_true", help="Don't error out if staged deployment wasn't locked")
    p.set_defaults(func=_finalize_deployment)

    p = _verb(sub, "refresh-md", "Generate rpm repo metadata", ["makecache"])
    p.add_argument("-f", "--force", action="store_true", help="Expire current cache")
    p.set_defaults(func=_refresh_md)

    p = _verb(sub, "cancel", "Cancel an active transaction")
    p.set_defaults(func=_cancel)

    p = _verb(sub, "cleanup", "Clear cached/pending data")
    for flag, long, helptext in (("-p", "--pending", "Remove pending deployment"),
                                 ("-r", "--rollback", "Remove rollback deployment"),
                                 ("-b", "--base", "Clear temporary files; will leave deployments unchanged"),
                                 ("-m", "--repomd", "Delete cached rpm repo metadata")):
        p.add_argument(flag, long, action="store_true", help=helptext)
    p.set_defaults(func=_cleanup)


def _verb(sub: Any, name: str, helptext: str, aliases: list[str] | None = None) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=helptext, description=helptext, aliases=aliases or [])
    add_sysroot_option(p)
    p.add_argument("--os", "--stateroot", dest="stateroot", metavar="STATEROOT", help=STATEROOT_HELP)
    return p


def _change_options(p: argparse.ArgumentParser, *, dry_run: bool = False, install: bool = True,
                    uninstall: bool = True, download: bool = True) -> None:
    """The options of rpm-ostree's verbs that change the base or the layer."""
    p.add_argument("-r", "--reboot", action="store_true", help=REBOOT_HELP)
    if dry_run:
        p.add_argument("-n", "--dry-run", action="store_true", help=DRY_RUN_HELP)
    if install:
        p.add_argument("--install", action="append", default=[], metavar="PKG", help="Overlay additional package")
    if uninstall:
        p.add_argument("--uninstall", action="append", default=[], metavar="PKG",
                       help="Remove overlayed additional package")
    p.add_argument("-C", "--cache-only", action="store_true", help=CACHE_ONLY_HELP)
    if download:
        p.add_argument("--download-only", action="store_true", help=DOWNLOAD_ONLY_HELP)
    p.add_argument("--unchanged-exit-77", action="store_true", help=UNCHANGED_HELP)
    p.add_argument("--lock-finalization", action="store_true", help=LOCK_HELP)
    p.add_argument("-y", "--assumeyes", action="store_true",
                   help="Auto-confirm interactive prompts for non-security questions")


def _repo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enablerepo", action="append", default=[], metavar="REPO",
                   help="Enable the repository based on the repo id, for this transaction")
    p.add_argument("--disablerepo", action="append", default=[], metavar="REPO",
                   help="Disable the repository based on the repo id ('*': all), for this transaction")
    p.add_argument("--releasever", metavar="VERSION", help="Set the releasever ($releasever in .repo files)")


def _repo_selection(args: argparse.Namespace) -> RepoOptions:
    return RepoOptions(tuple(getattr(args, "enablerepo", [])), tuple(getattr(args, "disablerepo", [])),
                       getattr(args, "releasever", None), getattr(args, "cache_only", False))


def _options(args: argparse.Namespace, **values: Any) -> client.ChangeOptions:
    """The ChangeOptions the parsed arguments ask for."""
    options = client.ChangeOptions(
        install=tuple(getattr(args, "install", []) or []), uninstall=tuple(getattr(args, "uninstall", []) or []),
        dry_run=getattr(args, "dry_run", False), cache_only=getattr(args, "cache_only", False),
        download_only=getattr(args, "download_only", False),
        lock_finalization=getattr(args, "lock_finalization", False), idempotent=getattr(args, "idempotent", False),
        allow_inactive=getattr(args, "allow_inactive", False), repos=_repo_selection(args))
    return dataclasses.replace(options, **values)


def _timestamp(value: int) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log(line: str) -> None:
    print(line, flush=True)


def _progress() -> Progress:
    return make_progress()


def _sysroot(args: argparse.Namespace) -> Sysroot:
    return open_sysroot(args.sysroot)


def _is_real_host(sysroot: Sysroot) -> bool:
    return sysroot.path.resolve() == Path("/") and Path("/run/ostree-booted").exists()


def reboot_command(sysroot: Sysroot) -> str:
    """The real next step: a reboot on an OSTree host, the simulated boot of a directory sysroot."""
    return "systemctl reboot" if _is_real_host(sysroot) else f"strata admin boot --sysroot {sysroot.path}"


def reboot_hint(sysroot: Sysroot) -> str:
    return f'Run "{reboot_command(sysroot)}" to start a reboot'


def _closing(sysroot: Sysroot, outcome: client.Outcome, stateroot: str | None) -> str:
    if outcome.guest:
        name = stateroot or (outcome.deployment.stateroot if outcome.deployment else "")
        return f"Changes written to stateroot '{name}', which is not the next boot"
    return f"Changes queued for next boot. {reboot_hint(sysroot)}"


def _print_diff(diff: PackageDiff | None) -> None:
    if diff is not None:
        for line in block_lines(diff):
            _log(line)


def _finish(args: argparse.Namespace, sysroot: Sysroot, outcome: client.Outcome, *, queued: bool = True,
            closing: str | None = None) -> int:
    """The package diff and the closing hint of a change; "No change." when there was none (exit 77 with
    --unchanged-exit-77)."""
    if outcome.planned is not None:
        _print_planned(outcome.planned)
        _log("Exiting because of '--dry-run' option")
        return 0
    if outcome.downloaded:
        _log("Downloaded; nothing deployed (--download-only).")
        return 0
    if not outcome.changed:
        _log("No change.")
        return 77 if getattr(args, "unchanged_exit_77", False) else 0
    _print_diff(outcome.diff)
    if closing is not None:
        _log(closing)
    if outcome.guest:
        _log(_closing(sysroot, outcome, args.stateroot))
    elif getattr(args, "lock_finalization", False):
        _log("Staged deployment locked: it is not finalized at shutdown until "
             f'"strata finalize-deployment --sysroot {sysroot.path} CHECKSUM" (or --allow-missing-checksum)')
    else:
        _log(_closing(sysroot, outcome, args.stateroot) if queued else reboot_hint(sysroot))
    if getattr(args, "reboot", False):
        _reboot(sysroot)
    return 0


def _print_planned(planned: client.PlannedTransaction) -> None:
    if planned.install:
        _log(f"Installing {len(planned.install)} packages:")
        for nevra, repo in planned.install:
            _log(f"  {nevra} ({repo})")
    if planned.remove:
        _log(f"Removing {len(planned.remove)} packages:")
        for nevra in planned.remove:
            _log(f"  {nevra}")
    if not planned.install and not planned.remove:
        _log("Empty transaction")


def _reboot(sysroot: Sysroot) -> None:
    from strata.core.admin import boot
    boot(sysroot, _progress())


# ---------------------------------------------------------------- layering


def _install(args: argparse.Namespace) -> int:
    if args.apply_live and args.reboot:
        raise InvalidInputError("Cannot specify `apply-live` and `reboot`")
    if not args.packages:
        raise InvalidInputError("At least one PACKAGE must be specified")
    sysroot = _sysroot(args)
    options = client.InstallOptions(idempotent=args.idempotent, allow_inactive=args.allow_inactive)
    outcome = client.install(sysroot, args.stateroot, args.packages, options, _progress(), _options(args),
                             fileoverride=args.force_replacefiles)
    if args.apply_live and outcome.changed:
        return live.apply_live(sysroot, False)
    return _finish(args, sysroot, outcome)


def _uninstall(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    if args.all:
        if args.packages:
            raise InvalidInputError("Cannot specify both --all and packages")
        outcome = client.uninstall_all(sysroot, args.stateroot, _progress(), _options(args))
    elif not args.packages:
        raise InvalidInputError("At least one PACKAGE must be specified (or --all)")
    else:
        outcome = client.uninstall(sysroot, args.stateroot, args.packages, args.idempotent, _progress(),
                                   _options(args))
    return _finish(args, sysroot, outcome)


def _search(args: argparse.Namespace) -> int:
    from strata.core.search import search
    result = search(_sysroot(args), args.stateroot, args.terms, SilentProgress(), _repo_selection(args))
    if result.empty:
        _log("No matches found.")
        return 0
    for group, matches in result.groups.items():
        if matches:
            _log(f"\n===== {group} Matched =====")
            for name, summary in matches:
                _log(f"{name} : {summary}")
    return 0


def _override_remove(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = client.override_remove(sysroot, args.stateroot, args.packages, _progress(), args.replace,
                                     _options(args))
    return _finish_override(args, sysroot, outcome)


def _override_replace(args: argparse.Namespace) -> int:
    if (args.source or args.freeze) and not args.experimental:
        raise InvalidInputError("--from and --freeze need --experimental")
    sysroot = _sysroot(args)
    if args.source or args.freeze:
        from strata.core.overrides import replace_from_repo
        outcome = replace_from_repo(sysroot, args.stateroot, args.packages, args.source, args.freeze, _progress(),
                                    _options(args))
    else:
        outcome = client.override_replace(sysroot, args.stateroot, args.packages, _progress(), args.remove,
                                          _options(args))
    return _finish_override(args, sysroot, outcome)


def _finish_override(args: argparse.Namespace, sysroot: Sysroot, outcome: client.Outcome) -> int:
    return _finish(args, sysroot, outcome, queued=False,
                   closing='Use "strata override reset" to undo overrides')


def _override_reset(args: argparse.Namespace) -> int:
    if not args.all and not args.packages:
        raise InvalidInputError("At least one PACKAGE must be specified (or --all)")
    sysroot = _sysroot(args)
    outcome = client.override_reset(sysroot, args.stateroot, args.packages, args.all, _progress(), _options(args))
    return _finish(args, sysroot, outcome, queued=False)


def _reset(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    request = client.ResetRequest(args.overlays, args.overrides, args.initramfs)
    return _finish(args, sysroot, client.reset(sysroot, args.stateroot, _progress(), request, _options(args)))


# ---------------------------------------------------------------- usroverlay, history


def _usroverlay(args: argparse.Namespace) -> int:
    from strata.core import usroverlay
    sysroot = _sysroot(args)
    unlocked = usroverlay.unlock(sysroot, _progress())
    _log(f"A writable overlayfs is now mounted on /usr ({unlocked.usr}).")
    _log(f"All changes there will be discarded on reboot ({reboot_command(sysroot)}).")
    return 0


def _history(args: argparse.Namespace) -> int:
    from strata.core import history
    found = history.entries(_sysroot(args))
    if not found:
        _log("No history.")
        return 0
    shown = found if args.limit <= 0 else found[:args.limit]
    for index, entry in enumerate(shown):
        if index:
            _log("")
        _log(f"{'CreateTimestamp':>{15}}: {_timestamp(entry.time)}")
        _log(f"{'CreateCommand':>{15}}: strata {' '.join([entry.verb, *entry.args])}")
        if entry.deployment:
            _log(f"{'Deployment':>{15}}: {entry.stateroot} {entry.deployment}")
        if entry.version:
            _log(f"{'Version':>{15}}: {entry.version}")
    if len(found) > len(shown):
        _log(f"... {len(found) - len(shown)} more (use --limit)")
    return 0


def _finalize_deployment(args: argparse.Namespace) -> int:
    from strata.core.admin import finalize_deployment
    sysroot = _sysroot(args)
    finalize_deployment(sysroot, args.stateroot, args.checksum, _progress(),
                        allow_missing_checksum=args.allow_missing_checksum, allow_unlocked=args.allow_unlocked)
    _reboot(sysroot)
    return 0


# ---------------------------------------------------------------- base changes


def _upgrade(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    if args.trigger_automatic_update_policy:
        return _automatic(args, sysroot)
    if args.check or args.preview:
        update = upgrades.check_upgrade(sysroot, args.stateroot, _progress())
        if update is None:
            _log("No updates available.")
            return 77
        _print_available(update, args.preview)
        return 0
    if args.download_only and not (args.install or args.uninstall):
        upgrades.download_update(sysroot, args.stateroot, _progress())
        _log("Update downloaded.")
        return 0
    options = _options(args, allow_downgrade=args.allow_downgrade)
    try:
        outcome = upgrades.upgrade(sysroot, args.stateroot, _progress(), options)
    except upgrades.PinnedError as exc:
        _log(str(exc))
        return 77 if args.unchanged_exit_77 else 0
    if not outcome.changed and outcome.planned is None and not outcome.downloaded:
        _log("No upgrade available.")
        return 77 if args.unchanged_exit_77 else 0
    return _finish(args, sysroot, outcome, queued=False)


def _automatic(args: argparse.Namespace, sysroot: Sysroot) -> int:
    from strata.daemon.automatic import run_policy
    from strata.daemon.config import config_path, read_config
    config = read_config(config_path())
    if config.automatic_update_policy == "none":
        _log("Automatic updates are not enabled; exiting...")
        return 0
    run_policy(sysroot, args.stateroot, config.automatic_update_policy, _progress(), config.fleetlock)
    return 0


def _print_available(update: upgrades.AvailableUpdate, preview: bool) -> None:
    _log("AvailableUpdate:")
    if update.version:
        _log(f"        Version: {update.version} ({_timestamp(update.timestamp)})")
    _log(f"         Commit: {update.commit}")
    if update.diff is None:
        return
    if preview:
        for line in aligned_lines(update.diff, 13):
            _log(line)
    else:
        _log(f"           Diff: {summary_text(update.diff)}")


def _deploy(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    options = _options(args, allow_downgrade=not args.disallow_downgrade)
    if args.preview:
        update = upgrades.preview_revision(sysroot, args.stateroot, args.revision, _progress(), options)
        if update is None:
            _log("No change.")
            return 77
        _print_available(update, True)
        return 0
    outcome = upgrades.deploy_revision(sysroot, args.stateroot, args.revision, _progress(), options)
    return _finish(args, sysroot, outcome, queued=False)


def _rebase(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    refspec, revision = args.refspec, args.revision
    if (args.branch or args.remote) and refspec is not None and revision is None:
        refspec, revision = None, refspec  # with -b/-m the one positional argument is the revision
    request = upgrades.RebaseRequest(refspec, revision, args.branch, args.remote, args.skip_purge,
                                     args.custom_origin_url, args.custom_origin_description)
    options = _options(args, allow_downgrade=not args.disallow_downgrade)
    outcome = upgrades.rebase(sysroot, args.stateroot, request, None, _progress(), options)
    return _finish(args, sysroot, outcome)


def _rollback(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    result = client.rollback(sysroot, _progress())
    _print_diff(result.diff)
    _log(reboot_hint(sysroot))
    if args.reboot:
        _reboot(sysroot)
    return 0


def _kargs(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    edits = ops.KargEdits(replace=args.replace, append=args.append, delete=args.delete)
    request = client.KargRequest(edits, tuple(args.append_if_missing), tuple(args.delete_if_present),
                                 args.import_proc_cmdline, args.deploy_index)
    if args.editor:
        if not request.empty:
            raise InvalidInputError("Cannot specify --editor with other kernel argument edits")
        request = client.KargRequest(replace_all=tuple(_edit_kargs(sysroot, args, request)),
                                     deploy_index=args.deploy_index)
    elif request.empty:
        _log(" ".join(client.kargs_source(sysroot, args.stateroot, request)))
        return 0
    outcome = client.kargs(sysroot, args.stateroot, request, _progress(),
                           client.ChangeOptions(lock_finalization=args.lock_finalization))
    if not outcome.changed:
        _log("No changes.")
        return 77 if args.unchanged_exit_77 else 0
    _log("Kernel arguments updated.")
    _log(_closing(sysroot, outcome, args.stateroot))
    if args.reboot:
        _reboot(sysroot)
    return 0


def _edit_kargs(sysroot: Sysroot, args: argparse.Namespace, request: client.KargRequest) -> list[str]:
    from strata.core.kargs_editor import edit_kargs
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidInputError("kargs --editor needs a terminal; use --append/--replace/--delete instead")
    return edit_kargs(client.kargs_source(sysroot, args.stateroot, request))


def _cleanup(args: argparse.Namespace) -> int:
    if not (args.pending or args.rollback or args.base or args.repomd):
        raise InvalidInputError("cleanup: At least one cleanup option must be specified")
    request = client.CleanupRequest(args.pending, args.rollback, args.base, args.repomd)
    changed = client.cleanup(_sysroot(args), args.stateroot, request, _progress())
    if (args.pending or args.rollback) and not changed:
        _log("Deployments unchanged.")
    return 0


def _refresh_md(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    if not client.refresh_md(sysroot, args.stateroot, args.force, _progress()):
        _log("No enabled rpm-md repositories.")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    record = cancel_active(_sysroot(args))
    _log("No active transaction." if record is None else f"Cancelled transaction: {record.title}")
    return 0
