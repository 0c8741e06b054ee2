"""`strata admin ...`: the sysroot verbs, named like `ostree admin`'s."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from strata.cli.common import add_sysroot_option, print_json
from strata.cli.progress import make_progress
from strata.core import admin
from strata.core.transaction import Progress
from strata.errors import InvalidInputError, StrataError
from strata.image.keyfile import KeyFile
from strata.sysroot import deploy as ops
from strata.sysroot.boot import run_in_deployment
from strata.sysroot.sysroot import Deployment, Sysroot


def register(sub: Any) -> None:
    parser = sub.add_parser("admin", help="manage a sysroot: deployments, boot entries")
    verbs = parser.add_subparsers(dest="admin_verb", metavar="VERB", parser_class=type(parser))

    p = verbs.add_parser("init-fs", help="initialize a directory as a sysroot")
    p.add_argument("path")
    p.set_defaults(func=_init_fs)

    p = _verb(verbs, "os-init", "create a stateroot")
    p.add_argument("stateroot")
    p.set_defaults(func=_os_init)

    p = _verb(verbs, "deploy", "deploy a commit")
    p.add_argument("refspec")
    p.add_argument("--os", dest="stateroot")
    p.add_argument("--origin-file")
    _karg_options(p)
    p.add_argument("--stage", action="store_true")
    p.add_argument("--retain", action="store_true")
    p.add_argument("--not-as-default", action="store_true")
    p.add_argument("--no-prune", action="store_true")
    p.set_defaults(func=_deploy)

    p = _verb(verbs, "status", "list deployments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    for name, helptext, func in (("undeploy", "remove a deployment", _undeploy),):
        p = _verb(verbs, name, helptext)
        p.add_argument("index", type=int)
        p.set_defaults(func=func)

    p = _verb(verbs, "pin", "keep a deployment from being removed")
    p.add_argument("index", type=int)
    p.add_argument("-u", "--unpin", action="store_true")
    p.set_defaults(func=_pin)

    p = _verb(verbs, "set-origin", "change the origin of a deployment")
    p.add_argument("remote")
    p.add_argument("url")
    p.add_argument("branch", nargs="?")
    p.add_argument("--index", type=int, default=0)
    p.set_defaults(func=_set_origin)

    p = _verb(verbs, "cleanup", "remove unlisted deployments and unreferenced objects")
    p.set_defaults(func=_cleanup)

    p = _verb(verbs, "finalize-staged", "finalize a staged deployment (what shutdown does)")
    p.set_defaults(func=_finalize)

    p = _verb(verbs, "rollback", "make the previous deployment the default")
    p.set_defaults(func=_rollback)

    p = _verb(verbs, "kargs", "edit the kernel arguments of a deployment")
    p.add_argument("--deployment", type=int, default=0, metavar="INDEX")
    _karg_options(p)
    p.set_defaults(func=_kargs)

    p = _verb(verbs, "boot", "simulate a reboot of a directory sysroot")
    p.set_defaults(func=_boot)

    p = _verb(verbs, "run", "run a command inside a deployment")
    p.add_argument("--deployment", type=int, metavar="INDEX")
    p.add_argument("--os", dest="stateroot")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run)


def _verb(verbs: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = verbs.add_parser(name, help=helptext)
    add_sysroot_option(p)
    return p


def _karg_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--karg", action="append", default=[], metavar="K=V", help="replace or add an argument")
    p.add_argument("--karg-append", action="append", default=[], metavar="K=V")
    p.add_argument("--karg-delete", action="append", default=[], metavar="K[=V]")
    p.add_argument("--karg-none", action="store_true")
    p.add_argument("--karg-proc-cmdline", action="store_true")


def _edits(args: argparse.Namespace) -> ops.KargEdits:
    return ops.KargEdits(args.karg, args.karg_append, args.karg_delete, args.karg_none, args.karg_proc_cmdline)


def _log(line: str) -> None:
    print(line, flush=True)


def _progress() -> Progress:
    return make_progress()


def _open(args: argparse.Namespace) -> Sysroot:
    return Sysroot.open(Path(args.sysroot))


def _init_fs(args: argparse.Namespace) -> int:
    Sysroot.init_fs(Path(args.path))
    return 0


def _os_init(args: argparse.Namespace) -> int:
    admin.os_init(_open(args), args.stateroot, _progress())
    print(f"ostree/deploy/{args.stateroot} initialized as OSTree root")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    sysroot = _open(args)
    stateroot = admin.default_stateroot(sysroot, args.stateroot)
    origin = KeyFile.load(args.origin_file) if args.origin_file else None
    options = ops.DeployOptions(stateroot, KeyFile(), _edits(args), stage=args.stage, retain=args.retain,
                                not_as_default=args.not_as_default, prune=not args.no_prune)
    admin.deploy(sysroot, args.refspec, origin, options, [args.refspec], _progress())
    return 0


def _roles(sysroot: Sysroot, deps: list[Deployment]) -> dict[tuple[str, str], str]:
    booted = sysroot.booted()
    roles: dict[tuple[str, str], str] = {}
    if booted is None:
        for dep in deps:
            if dep.staged:
                roles[dep.key] = "staged"
        return roles
    index = next((i for i, d in enumerate(deps) if d.key == booted.key), -1)
    pending = next((d for d in deps[:index] if d.stateroot == booted.stateroot), None)
    rollback = next((d for d in deps[index + 1:] if d.stateroot == booted.stateroot), None)
    if pending is not None:
        roles[pending.key] = "staged" if pending.staged else "pending"
    if rollback is not None:
        roles[rollback.key] = "rollback"
    return roles


def _status(args: argparse.Namespace) -> int:
    sysroot = _open(args)
    deps = sysroot.deployments()
    booted = sysroot.booted()
    roles = _roles(sysroot, deps)
    if args.json:
        print_json({"deployments": [_dep_json(sysroot, d, booted, roles) for d in deps]})
        return 0
    if not deps:
        print("No deployments.")
        return 0
    for dep in deps:
        marker = "*" if booted is not None and dep.key == booted.key else " "
        role = f" ({roles[dep.key]})" if dep.key in roles else ""
        print(f"{marker} {dep.stateroot} {dep.name}{role}")
        version = sysroot.commit_version(dep.csum)
        if version:
            print(f"    Version: {version}")
        if sysroot.is_pinned(dep):
            print("    Pinned: yes")
        refspec = sysroot.read_origin(dep).get("origin", "refspec") or sysroot.read_origin(dep).get(
            "origin", "baserefspec")
        print(f"    origin refspec: {refspec}" if refspec else "    origin: none")
    return 0


def _dep_json(sysroot: Sysroot, dep: Deployment, booted: Deployment | None,
              roles: dict[tuple[str, str], str]) -> dict[str, Any]:
    origin = sysroot.read_origin(dep)
    return {
        "osname": dep.stateroot, "checksum": dep.csum, "serial": dep.serial, "bootcsum": dep.bootcsum,
        "booted": booted is not None and dep.key == booted.key, "staged": dep.staged,
        "pinned": sysroot.is_pinned(dep), "role": roles.get(dep.key),
        "version": sysroot.commit_version(dep.csum),
        "origin": origin.get("origin", "refspec") or origin.get("origin", "baserefspec"),
        "kargs": dep.kargs,
    }


def _undeploy(args: argparse.Namespace) -> int:
    admin.undeploy(_open(args), args.index, _progress())
    return 0


def _pin(args: argparse.Namespace) -> int:
    dep = admin.pin(_open(args), args.index, not args.unpin, _progress())
    print(f"Deployment {args.index} is now {'unpinned' if args.unpin else 'pinned'}: {dep.name}")
    return 0


def _set_origin(args: argparse.Namespace) -> int:
    admin.set_origin(_open(args), args.index, args.remote, args.url, args.branch, _progress())
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    admin.cleanup(_open(args), _progress())
    return 0


def _finalize(args: argparse.Namespace) -> int:
    if admin.finalize_staged(_open(args), _progress()) is None:
        print("No staged deployment.")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    admin.rollback(_open(args), _progress())
    return 0


def _kargs(args: argparse.Namespace) -> int:
    sysroot = _open(args)
    edits = _edits(args)
    if edits.empty:
        print(" ".join(ops.by_index(sysroot, args.deployment).kargs))
        return 0
    admin.set_kargs(sysroot, args.deployment, edits, _progress())
    return 0


def _boot(args: argparse.Namespace) -> int:
    admin.boot(_open(args), _progress())
    return 0


def _run(args: argparse.Namespace) -> int:
    sysroot = _open(args)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise InvalidInputError("no command given (strata admin run [--deployment N] -- COMMAND ...)")
    if args.deployment is not None:
        dep = ops.by_index(sysroot, args.deployment)
    elif args.stateroot:
        dep = next((d for d in sysroot.deployments() if d.stateroot == args.stateroot), None)  # type: ignore[assignment]
        if dep is None:
            raise StrataError(f"No deployment for OS '{args.stateroot}'")
    else:
        booted = sysroot.booted()
        if booted is None:
            raise StrataError("the sysroot is not booted (run `strata admin boot` first) and no --deployment given")
        dep = booted
    sys.stdout.flush()
    return run_in_deployment(sysroot, dep, command)
