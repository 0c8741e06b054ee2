"""The rpm-ostree verbs: status, install, uninstall, override, reset, apply-live, upgrade, deploy, rebase,
rollback, kargs, cleanup."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strata.cli.common import add_sysroot_option
from strata.core import client
from strata.core import upgrade as upgrades
from strata.core.pkgdiff import PackageDiff, aligned_lines, block_lines, summary_text
from strata.core.transaction import LineProgress, cancel_active
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.sysroot import deploy as ops
from strata.sysroot.sysroot import Sysroot

KEY_WIDTH = 23


def register(sub: Any) -> None:
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


def _timestamp(value: int) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log(line: str) -> None:
    print(line, flush=True)


def _progress() -> LineProgress:
    return LineProgress(_log)


def open_sysroot(path: str) -> Sysroot:
    try:
        return Sysroot.open(Path(path))
    except NotFoundError:
        if Path(path).resolve() == Path("/"):
            raise StrataError("This system was not booted via libostree; cannot operate") from None
        raise


def _sysroot(args: argparse.Namespace) -> Sysroot:
    return open_sysroot(args.sysroot)


def _is_real_host(sysroot: Sysroot) -> bool:
    return sysroot.path.resolve() == Path("/") and Path("/run/ostree-booted").exists()


def reboot_hint(sysroot: Sysroot) -> str:
    if _is_real_host(sysroot):
        return 'Run "systemctl reboot" to start a reboot'
    return f'Run "strata admin boot --sysroot {sysroot.path}" to start a reboot'


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
    """The package diff and the closing hint of a change; "No change." when there was none."""
    if not outcome.changed:
        _log("No change.")
        return 0
    _print_diff(outcome.diff)
    if closing is not None:
        _log(closing)
    if outcome.guest:
        _log(_closing(sysroot, outcome, args.stateroot))
    else:
        _log(_closing(sysroot, outcome, args.stateroot) if queued else reboot_hint(sysroot))
    if getattr(args, "reboot", False):
        _reboot(sysroot)
    return 0


def _reboot(sysroot: Sysroot) -> None:
    from strata.core.admin import boot
    boot(sysroot, _progress())


# ---------------------------------------------------------------- layering


def _install(args: argparse.Namespace) -> int:
    if args.apply_live and args.reboot:
        raise InvalidInputError("Cannot specify `apply-live` and `reboot`")
    sysroot = _sysroot(args)
    options = client.InstallOptions(idempotent=args.idempotent, allow_inactive=args.allow_inactive)
    outcome = client.install(sysroot, args.stateroot, args.packages, options, _progress())
    if args.apply_live and outcome.changed:
        return _do_apply_live(sysroot, False)
    return _finish(args, sysroot, outcome)


def _uninstall(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = client.uninstall(sysroot, args.stateroot, args.packages, args.idempotent, _progress())
    return _finish(args, sysroot, outcome)


def _override_remove(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = client.override_remove(sysroot, args.stateroot, args.packages, _progress())
    return _finish_override(args, sysroot, outcome)


def _override_replace(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = client.override_replace(sysroot, args.stateroot, args.packages, _progress())
    return _finish_override(args, sysroot, outcome)


def _finish_override(args: argparse.Namespace, sysroot: Sysroot, outcome: client.Outcome) -> int:
    return _finish(args, sysroot, outcome, queued=False, closing='Use "rpm-ostree override reset" to undo overrides')


def _override_reset(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = client.override_reset(sysroot, args.stateroot, args.packages, args.all, _progress())
    return _finish(args, sysroot, outcome, queued=False)


def _reset(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    return _finish(args, sysroot, client.reset(sysroot, args.stateroot, _progress()))


# ---------------------------------------------------------------- apply-live


def _apply_live(args: argparse.Namespace) -> int:
    return _do_apply_live(_sysroot(args), args.allow_replacement)


def _do_apply_live(sysroot: Sysroot, allow_replacement: bool) -> int:
    result = client.apply_live(sysroot, allow_replacement, _progress())
    _print_diff(result.diff)
    return 0


# ---------------------------------------------------------------- base changes


def _upgrade(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    if args.check or args.preview:
        update = upgrades.check_upgrade(sysroot, args.stateroot, _progress())
        if update is None:
            _log("No updates available.")
            return 77
        _print_available(update, args.preview)
        return 0
    if args.download_only:
        upgrades.download_update(sysroot, args.stateroot, _progress())
        _log("Update downloaded.")
        return 0
    try:
        outcome = upgrades.upgrade(sysroot, args.stateroot, _progress())
    except upgrades.PinnedError as exc:
        _log(str(exc))
        return 0
    if not outcome.changed:
        _log("No upgrade available.")
        return 0
    return _finish(args, sysroot, outcome, queued=False)


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
    outcome = upgrades.deploy_revision(sysroot, args.stateroot, args.revision, _progress())
    return _finish(args, sysroot, outcome, queued=False)


def _rebase(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    outcome = upgrades.rebase(sysroot, args.stateroot, args.refspec, args.revision, _progress())
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
    if edits.empty:
        _log(" ".join(client.pending_kargs(sysroot, args.stateroot)))
        return 0
    outcome = client.kargs(sysroot, args.stateroot, edits, _progress())
    if not outcome.changed:
        _log("No changes.")
        return 0
    _log("Kernel arguments updated.")
    _log(_closing(sysroot, outcome, args.stateroot))
    return 0


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
