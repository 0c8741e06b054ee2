"""`ostree admin ...`: the sysroot verbs, run by `strata admin` (cli/admin.py) with ostree's spelling.

ostree takes --sysroot (or $OSTREE_SYSROOT) anywhere on the line; `stateroot-init` is `os-init`; `kargs
edit-in-place --append-if-missing=K` edits the booted deployment's arguments.
"""

from __future__ import annotations

import os

from strata.cli.ostree import Invocation, UsageError, Verb, dispatch
from strata.cli.ostree_options import array, flag, integer, string

_DEPLOY_FLAGS = ("retain", "stage", "not-as-default", "no-prune", "karg-none", "karg-proc-cmdline")
_SAME_NAME = {"os-init": "os-init", "stateroot-init": "os-init", "deploy": "deploy", "status": "status",
              "undeploy": "undeploy", "pin": "pin", "set-origin": "set-origin", "cleanup": "cleanup",
              "finalize-staged": "finalize-staged", "init-fs": "init-fs"}


def _strata_admin(verb: str, inv: Invocation, extra: list[str]) -> int:
    from strata.cli.main import main as strata_main
    sysroot = inv.args.string("sysroot") or os.environ.get("OSTREE_SYSROOT")
    argv = ["admin", _SAME_NAME.get(verb, verb), *extra]
    if sysroot and verb != "init-fs":
        argv.append(f"--sysroot={sysroot}")
    return strata_main(argv)


def _passthrough(inv: Invocation) -> int:
    """Verbs whose options strata's admin spells as ostree does: options are handed on as given."""
    a = inv.args
    extra = list(inv.positional)
    for name in _DEPLOY_FLAGS:
        if a.flag(name):
            extra.append(f"--{name}")
    for name in ("os", "origin-file"):
        if a.string(name):
            extra.append(f"--{name}={a.string(name)}")
    for name in ("karg", "karg-append"):
        extra += [f"--{name}={value}" for value in a.strings(name)]
    if a.string("karg-delete"):
        extra.append(f"--karg-delete={a.string('karg-delete')}")
    if a.flag("unpin"):
        extra.append("--unpin")
    if a.values.get("index") is not None:
        extra.append(f"--index={a.number('index', 0)}")
    return _strata_admin(inv.verb, inv, extra)


def _init_fs(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("PATH must be specified")
    return _strata_admin("init-fs", inv, [inv.positional[0]])


def _kargs(inv: Invocation) -> int:
    return dispatch(KARGS_VERBS, list(inv.args.values.get("__raw__", [])), "command")


def _kargs_edit_in_place(inv: Invocation) -> int:
    extra = [f"--karg-append={value}" for value in inv.args.strings("append-if-missing")]
    return _strata_admin("kargs", inv, extra)


SYSROOT = string("sysroot")
KARGS_VERBS = {"edit-in-place": Verb("edit-in-place", _kargs_edit_in_place,
                                     (array("append-if-missing"), SYSROOT), takes_repo=False)}
DEPLOY_OPTIONS = (string("os"), string("origin-file"), flag("no-prune"), flag("no-merge"), flag("retain"),
                  flag("stage"), flag("lock-finalization"), flag("retain-pending"), flag("retain-rollback"),
                  flag("not-as-default"), flag("karg-proc-cmdline"), array("karg"), array("karg-append"),
                  flag("karg-none"), string("karg-delete"), array("overlay-initrd"), SYSROOT)
ADMIN_VERBS = {
    "init-fs": Verb("init-fs", _init_fs, (flag("modern"), SYSROOT), takes_repo=False),
    "os-init": Verb("os-init", _passthrough, (SYSROOT,), takes_repo=False),
    "stateroot-init": Verb("stateroot-init", _passthrough, (SYSROOT,), takes_repo=False),
    "deploy": Verb("deploy", _passthrough, DEPLOY_OPTIONS, takes_repo=False),
    "status": Verb("status", _passthrough, (flag("verify", "V"), SYSROOT), takes_repo=False),
    "undeploy": Verb("undeploy", _passthrough, (SYSROOT,), takes_repo=False),
    "pin": Verb("pin", _passthrough, (flag("unpin", "u"), SYSROOT), takes_repo=False),
    "set-origin": Verb("set-origin", _passthrough, (array("set", "s"), integer("index"), SYSROOT),
                       takes_repo=False),
    "cleanup": Verb("cleanup", _passthrough, (SYSROOT,), takes_repo=False),
    "finalize-staged": Verb("finalize-staged", _passthrough, (flag("hold"), SYSROOT), takes_repo=False),
    "kargs": Verb("kargs", _kargs, has_subverbs=True),
}


def admin(inv: Invocation) -> int:
    return dispatch(ADMIN_VERBS, list(inv.args.values.get("__raw__", [])), "command")


VERBS = (Verb("admin", admin, has_subverbs=True),)
