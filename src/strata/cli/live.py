"""`strata apply-live` (spec H): a verb module of its own, so that the command imports the live-tree code
only, not the solver and layering engine the other client verbs load (with cold caches that import costs
more than applying a small package). `ex livefs` and `ex apply-live` (cli.client) and `install --apply-live`
run the same function."""

from __future__ import annotations

import argparse
from typing import Any

from strata.cli.common import add_sysroot_option, open_sysroot
from strata.cli.progress import make_progress
from strata.core import livefs
from strata.core.pkgdiff import block_lines
from strata.sysroot.sysroot import Sysroot

HELP = "Apply pending deployment changes to booted deployment"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("apply-live", help=HELP, description=HELP)
    add_sysroot_option(p)
    p.add_argument("--os", "--stateroot", dest="stateroot", metavar="STATEROOT", help="Operate on provided STATEROOT")
    add_apply_live_options(p)


def add_apply_live_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", metavar="COMMIT", help="Target provided commit instead of pending deployment")
    p.add_argument("--reset", action="store_true", help="Reset back to booted commit")
    p.add_argument("--allow-replacement", action="store_true", help="Enable live updates and removals for "
                   "existing packages")
    p.set_defaults(func=_apply_live)


def _apply_live(args: argparse.Namespace) -> int:
    return apply_live(open_sysroot(args.sysroot), args.allow_replacement, args.target, args.reset)


def apply_live(sysroot: Sysroot, allow_replacement: bool, target: str | None = None, reset: bool = False) -> int:
    result = livefs.apply_live(sysroot, allow_replacement, make_progress(), target=target, reset=reset)
    if result.diff is not None:
        for line in block_lines(result.diff):
            print(line, flush=True)
    return 0
