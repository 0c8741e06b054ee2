"""`strata initramfs` and `strata initramfs-etc`: parse, call core.initramfs, print as rpm-ostree does."""

from __future__ import annotations

import argparse
from typing import Any

from strata.cli import client as verbs
from strata.core import initramfs
from strata.errors import InvalidInputError


def register(sub: Any) -> None:
    p = verbs._verb(sub, "initramfs", "Enable or disable local initramfs regeneration")
    p.add_argument("--enable", action="store_true", help="Enable regenerating initramfs locally using dracut")
    p.add_argument("--disable", action="store_true", help="Disable regenerating initramfs locally")
    p.add_argument("--arg", action="append", default=[], metavar="ARG", dest="args",
                   help="Append ARG to the dracut arguments")
    _common_options(p)
    p.set_defaults(func=_initramfs)
    p = verbs._verb(sub, "initramfs-etc", "Add files to the initramfs")
    p.add_argument("--track", action="append", default=[], metavar="FILE", help="Track root /etc file")
    p.add_argument("--untrack", action="append", default=[], metavar="FILE", help="Untrack root /etc file")
    p.add_argument("--untrack-all", action="store_true", help="Untrack all root /etc files")
    p.add_argument("--force-sync", action="store_true",
                   help="Deploy a new tree with the latest tracked /etc files")
    p.add_argument("--unchanged-exit-77", action="store_true", help=verbs.UNCHANGED_HELP)
    _common_options(p)
    p.set_defaults(func=_initramfs_etc)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--reboot", action="store_true", help=verbs.REBOOT_HELP)
    p.add_argument("--lock-finalization", action="store_true", help=verbs.LOCK_HELP)


def _initramfs(args: argparse.Namespace) -> int:
    if args.enable and args.disable:
        raise InvalidInputError("Cannot simultaenously specify --enable and --disable")
    if args.disable and args.args:
        raise InvalidInputError("Cannot simultaenously specify --disable and --arg")
    sysroot = verbs._sysroot(args)
    if not (args.enable or args.disable):
        if args.reboot:
            raise InvalidInputError("--reboot must be used with --enable or --disable")
        if args.args:
            raise InvalidInputError("--arg must be used with --enable")
        state = initramfs.current_state(sysroot, args.stateroot)
        print(f"Initramfs regeneration: {'enabled' if state.regenerate else 'disabled'}")
        if state.regenerate and state.args:
            print("Initramfs args: " + "".join(f"{a} " for a in state.args))
        return 0
    outcome = initramfs.set_regeneration(sysroot, args.stateroot, args.enable, args.args, verbs._progress(),
                                         verbs._options(args))
    print(f"Initramfs regeneration is now: {'enabled' if args.enable else 'disabled'}")
    if args.disable:
        print("Initramfs will be reset to default on next reboot.")
    return verbs._finish(args, sysroot, outcome, queued=False)


def _initramfs_etc(args: argparse.Namespace) -> int:
    request = initramfs.EtcRequest(tuple(args.track), tuple(args.untrack), args.untrack_all, args.force_sync)
    sysroot = verbs._sysroot(args)
    if request.empty:
        tracked = initramfs.current_state(sysroot, args.stateroot).etc
        print("Tracked files:" if tracked else "No tracked files.")
        for path in tracked:
            print(f"  {path}")
        return 0
    outcome = initramfs.track_etc(sysroot, args.stateroot, request, verbs._progress(), verbs._options(args))
    if not outcome.changed:
        print("No changes.")
        return 77 if args.unchanged_exit_77 else 0
    return verbs._finish(args, sysroot, outcome, queued=False)
