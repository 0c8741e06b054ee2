"""The CLI as a client of the service: on a booted system (`--sysroot /`) where `strata daemon` runs or can be
activated, a verb becomes a D-Bus call and the transaction's signals are rendered by the same Progress the
in-process engine reports to; the closing lines (package diff, next-boot hint) are printed as in-process.

`--daemon-address ADDR` (or $STRATA_DAEMON_ADDRESS) sends every routable verb to the daemon on that bus,
whatever sysroot it serves: the tests run the lab through a daemon serving a directory sysroot. A verb or an
option the daemon does not take runs in-process (route answers None)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from strata.errors import InvalidInputError

ADDRESS_ENV = "STRATA_DAEMON_ADDRESS"
# Attributes every verb may carry that say nothing about what the daemon should do.
NEUTRAL = {"func", "verb", "sysroot", "stateroot", "debug", "global_quiet", "daemon_address", "known_verbs",
           "override_verb", "ex_verb", "assumeyes", "unchanged_exit_77"}
GLOBAL_FLAGS = ("-q", "--quiet", "--debug")
EXIT_UNCHANGED = 77
OVERRIDE_HINT = 'Use "strata override reset" to undo overrides'


def route(args: argparse.Namespace) -> int | None:
    """Run the verb through the daemon when it should; None: run it in-process."""
    address = getattr(args, "daemon_address", None) or os.environ.get(ADDRESS_ENV) or None
    handler = ROUTES.get(_verb_key(args))
    if address is None and (handler is None or _unhandled_options(args, handler[1]) or not _booted_host(args)):
        return None
    from strata.daemon import client as daemon_client
    if address is None:
        try:
            bus = daemon_client.connect(None)
            if not daemon_client.service_available(bus):
                return None
        except daemon_client.DaemonError:
            return None  # no system bus: the engine runs in-process
    else:
        bus = daemon_client.connect(address)
    session = _Session(args, bus, daemon_client.served_sysroot(bus))
    if address is not None:
        session.adopt_sysroot()  # what still runs in-process works on the daemon's sysroot
    if handler is None or _unhandled_options(args, handler[1]):
        return None
    return handler[0](session)


def _verb_key(args: argparse.Namespace) -> str:
    verb = str(getattr(args, "verb", "") or "")
    for group, attr in (("override", "override_verb"), ("ex", "ex_verb")):
        if verb == group:
            return f"{group} {getattr(args, attr, '')}"
    return verb


def _unhandled_options(args: argparse.Namespace, handled: frozenset[str]) -> list[str]:
    """Options set on the command line that the daemon route does not translate (they run in-process)."""
    return [name for name, value in vars(args).items()
            if name not in NEUTRAL and name not in handled and value not in (None, False, [], (), "", 0)]


def _booted_host(args: argparse.Namespace) -> bool:
    sysroot = getattr(args, "sysroot", None)
    return sysroot is not None and Path(sysroot).resolve() == Path("/") and Path("/run/ostree-booted").exists()


class _Session:
    """One routed command: the bus, the sysroot the daemon serves (read here only to print results)."""

    def __init__(self, args: argparse.Namespace, bus: Any, served: Path) -> None:
        self.args = args
        self.bus = bus
        self.served = served

    def adopt_sysroot(self) -> None:
        """An addressed daemon serves its own sysroot: `--sysroot` may only name that one (or stay /)."""
        wanted = getattr(self.args, "sysroot", None)
        if wanted is None:
            return
        if Path(wanted).resolve() not in (Path("/"), self.served.resolve()):
            raise InvalidInputError(f"the daemon serves {self.served}, not {wanted}")
        self.args.sysroot = str(self.served)

    def sysroot(self) -> Any:
        from strata.sysroot.sysroot import Sysroot
        return Sysroot.open(self.served)

    def progress(self) -> Any:
        from strata.cli import client as cli_client
        return cli_client._progress()

    def transaction(self, method: str, signature: str, values: tuple[Any, ...], fds: list[int] | None = None) -> Any:
        """Call an OS method that starts a transaction, follow it; the in-process Outcome it amounts to."""
        from gi.repository import GLib

        from strata.daemon import client as daemon_client
        sysroot = self.sysroot()
        before = sysroot.deployments()
        stateroot = getattr(self.args, "stateroot", None)
        address = daemon_client.call_os(self.bus, stateroot, method, GLib.Variant(signature, values), fds)[0]
        daemon_client.follow(str(address), self.progress())
        return daemon_client.outcome_after(self.sysroot(), before)

    def finish(self, outcome: Any, **kwargs: Any) -> int:
        """The in-process closing lines; the daemon already rebooted when asked, and said "No change."."""
        from strata.cli import client as cli_client
        if not outcome.changed:
            return self.unchanged()
        shown = copy.copy(self.args)
        shown.reboot = False
        return int(cli_client._finish(shown, self.sysroot(), outcome, **kwargs) or 0)

    def unchanged(self) -> int:
        return EXIT_UNCHANGED if getattr(self.args, "unchanged_exit_77", False) else 0


def _options(args: argparse.Namespace, *, command_line: bool = True, **extra: Any) -> dict[str, Any]:
    from gi.repository import GLib
    options = {"initiating-command-line": GLib.Variant("s", _command_line())} if command_line else {}
    if getattr(args, "reboot", False):
        options["reboot"] = GLib.Variant("b", True)
    for key, value in extra.items():
        if value:
            options[key.replace("_", "-")] = GLib.Variant("b", True) if value is True else value
    return options


def _command_line() -> str:
    """The transaction's title, as rpm-ostree's: the command's words without the program and global options."""
    import sys
    words, skip = [], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word == "--daemon-address":
            skip = True
        elif word not in GLOBAL_FLAGS and not word.startswith("--daemon-address="):
            words.append(word)
    return " ".join(words)[:4096]


# ---------------------------------------------------------------- the verbs


def _status(session: _Session) -> int:
    from strata.cli import status
    from strata.core.transaction import active_transaction
    from strata.daemon import client as daemon_client
    from strata.daemon.automatic import read_cached_update, timer_state
    sysroot = session.sysroot()
    records = [daemon_client.jsonable(d) for d in daemon_client.sysroot_property(session.bus, "Deployments")]
    policy = str(daemon_client.sysroot_property(session.bus, "AutomaticUpdatePolicy"))
    record = active_transaction(sysroot)  # one the engine runs (the daemon's worker, or in-process)
    running = (record.title, record.initiator) if record is not None else daemon_client.active_transaction(session.bus)
    transaction = list(running) if running is not None else None
    booted = sysroot.booted()
    stateroot = booted.stateroot if booted is not None else (records[0]["osname"] if records else "")
    view = status.StatusView(sysroot, records, transaction, policy, timer_state() if policy != "none" else "",
                             read_cached_update(sysroot, stateroot))
    return status.show(session.args, view)


def _is_local_file(spec: str) -> bool:
    return spec.endswith(".rpm") or spec.startswith("file://")


def _install(session: _Session) -> int | None:
    from gi.repository import GLib
    args = session.args
    options = _options(args, idempotent_layering=args.idempotent, allow_inactive_requests=args.allow_inactive)
    local = [p for p in args.packages if _is_local_file(p)]
    if not local:
        return session.finish(session.transaction("PkgChange", "(a{sv}asas)", (options, args.packages, [])))
    names = [p for p in args.packages if not _is_local_file(p)]
    modifiers = {"install-packages": GLib.Variant("as", names)} if names else {}
    with _opened(local) as fds:  # rpm-ostree's install-local-packages: the files travel as descriptors
        modifiers["install-local-packages"] = GLib.Variant("ah", list(range(len(fds))))
        outcome = session.transaction("UpdateDeployment", "(a{sv}a{sv})", (modifiers, options), fds)
    return session.finish(outcome)


def _override_replace(session: _Session) -> int | None:
    from gi.repository import GLib
    args = session.args
    if not all(_is_local_file(p) for p in args.packages):
        return None
    modifiers = {"override-remove-packages": GLib.Variant("as", list(args.remove))} if args.remove else {}
    with _opened(args.packages) as fds:
        modifiers["override-replace-local-packages"] = GLib.Variant("ah", list(range(len(fds))))
        outcome = session.transaction("UpdateDeployment", "(a{sv}a{sv})", (modifiers, _options(args)), fds)
    return session.finish(outcome, queued=False, closing=OVERRIDE_HINT)


@contextlib.contextmanager
def _opened(paths: list[str]) -> Iterator[list[int]]:
    """The files, opened for reading (file:// URLs as paths), closed afterwards."""
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path.removeprefix("file://"), os.O_RDONLY | os.O_CLOEXEC))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _uninstall(session: _Session) -> int:
    args = session.args
    options = _options(args, idempotent_layering=args.idempotent)
    return session.finish(session.transaction("PkgChange", "(a{sv}asas)", (options, [], args.packages)))


def _update_deployment(session: _Session, modifiers: dict[str, Any], options: dict[str, Any]) -> Any:
    return session.transaction("UpdateDeployment", "(a{sv}a{sv})", (modifiers, options))


def _override_remove(session: _Session) -> int:
    from gi.repository import GLib
    outcome = _update_deployment(session, {"override-remove-packages": GLib.Variant("as", session.args.packages)},
                                 _options(session.args))
    return session.finish(outcome, queued=False, closing=OVERRIDE_HINT)


def _override_reset(session: _Session) -> int | None:
    from gi.repository import GLib
    if session.args.all:
        outcome = _update_deployment(session, {}, _options(session.args, no_overrides=True))
        return session.finish(outcome, queued=False)
    if not session.args.packages:
        return None
    outcome = _update_deployment(session, {"override-reset-packages": GLib.Variant("as", session.args.packages)},
                                 _options(session.args))
    return session.finish(outcome, queued=False)


def _reset(session: _Session) -> int:
    args = session.args
    parts = [getattr(args, name, False) for name in ("overlays", "overrides", "initramfs")]
    overlays, overrides, initramfs = parts if any(parts) else [True, True, True]  # none named: every mutation
    options = _options(args, no_layering=overlays, no_overrides=overrides, no_initramfs=initramfs)
    return session.finish(_update_deployment(session, {}, options))


def _upgrade(session: _Session) -> int | None:
    args = session.args
    if getattr(args, "trigger_automatic_update_policy", False):
        from strata.daemon import client as daemon_client
        daemon_client.trigger_automatic_update(session.bus, getattr(args, "stateroot", None), session.progress())
        return 0
    if getattr(args, "check", False) or getattr(args, "preview", False):
        return None  # a read-only look at the remote: in-process
    options = _options(args, download_only=args.download_only, allow_downgrade=getattr(args, "allow_downgrade", False))
    outcome = session.transaction("Upgrade", "(a{sv})", (options,))
    if args.download_only:
        print("Update downloaded.", flush=True)
        return 0
    return session.finish(outcome, queued=False)


def _new_base(session: _Session, modifiers: dict[str, Any], **kwargs: Any) -> int:
    """rebase/deploy with packages to (un)install in the same change: UpdateDeployment, as rpm-ostree's client."""
    from gi.repository import GLib
    args = session.args
    for key, names in (("install-packages", getattr(args, "install", [])),
                       ("uninstall-packages", getattr(args, "uninstall", []))):
        if names:
            modifiers[key] = GLib.Variant("as", list(names))
    options = _options(args, cache_only=getattr(args, "cache_only", False),
                       lock_finalization=getattr(args, "lock_finalization", False))
    return session.finish(_update_deployment(session, modifiers, options), **kwargs)


def _deploy(session: _Session) -> int:
    from gi.repository import GLib
    args = session.args
    if _change_requested(args):
        return _new_base(session, {"set-revision": GLib.Variant("s", args.revision)}, queued=False)
    outcome = session.transaction("Deploy", "(sa{sv})", (args.revision, _options(args)))
    return session.finish(outcome, queued=False)


def _rebase(session: _Session) -> int | None:
    from gi.repository import GLib
    args = session.args
    if not args.refspec:
        return None
    if _change_requested(args):
        modifiers = {"set-refspec": GLib.Variant("s", args.refspec)}
        if args.revision:
            modifiers["set-revision"] = GLib.Variant("s", args.revision)
        return _new_base(session, modifiers)
    extra = {"revision": GLib.Variant("s", args.revision)} if args.revision else {}
    outcome = session.transaction("Rebase", "(a{sv}sas)", (_options(args, **extra), args.refspec, []))
    return session.finish(outcome)


def _change_requested(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) for name in ("install", "uninstall", "cache_only", "lock_finalization"))


def _rollback(session: _Session) -> int:
    from strata.cli import client as cli_client
    from strata.core.client import package_diff
    sysroot = session.sysroot()
    booted = sysroot.booted()
    session.transaction("Rollback", "(a{sv})", (_options(session.args),))
    sysroot = session.sysroot()
    default = sysroot.deployments()[0] if sysroot.deployments() else None
    if booted is not None and default is not None:
        cli_client._print_diff(package_diff(sysroot.repo, booted.csum, default.csum))
    if not session.args.reboot:
        print(cli_client.reboot_hint(sysroot), flush=True)
    return 0


def _kargs(session: _Session) -> int | None:
    from strata.cli import client as cli_client
    args = session.args
    if not (args.append or args.delete or args.replace):
        return None  # a query: read in-process
    outcome = session.transaction("KernelArgs", "(sasasasa{sv})",
                                  ("", args.append, args.replace, args.delete, _options(args)))
    if not outcome.changed:
        return session.unchanged()
    print("Kernel arguments updated.", flush=True)
    print(cli_client._closing(session.sysroot(), outcome, args.stateroot), flush=True)
    return 0


def _cleanup(session: _Session) -> int:
    args = session.args
    elements = [name for name, wanted in (("pending-deploy", args.pending), ("rollback-deploy", args.rollback),
                                          ("base", args.base), ("repomd", args.repomd)) if wanted]
    if not elements:
        raise InvalidInputError("cleanup: At least one cleanup option must be specified")
    session.transaction("Cleanup", "(as)", (elements,))
    return 0


def _refresh_md(session: _Session) -> int:
    session.transaction("RefreshMd", "(a{sv})", (_options(session.args, command_line=False, force=session.args.force),))
    return 0


def _cancel(session: _Session) -> int | None:
    from strata.daemon import client as daemon_client
    title = daemon_client.cancel_active(session.bus)
    if title is None:
        return None  # perhaps one started in-process: the engine's own cancel
    print(f"Cancelled transaction: {title}", flush=True)
    return 0


def _reload(session: _Session) -> int:
    from strata.daemon import client as daemon_client
    daemon_client.reload(session.bus)
    return 0


def _finalize(session: _Session) -> int:
    from gi.repository import GLib
    args = session.args
    options: dict[str, Any] = {}
    checksum = getattr(args, "checksum", None)
    if checksum:
        options["checksum"] = GLib.Variant("s", checksum)
    if getattr(args, "allow_missing_checksum", False):
        options["allow-missing-checksum"] = GLib.Variant("b", True)
    if getattr(args, "allow_unlocked", False):
        options["allow-unlocked"] = GLib.Variant("b", True)
    session.transaction("FinalizeDeployment", "(a{sv})", (options,))
    return 0


def _handled(*names: str) -> frozenset[str]:
    return frozenset(names)


ROUTES: dict[str, tuple[Callable[[_Session], int | None], frozenset[str]]] = {
    "status": (_status, _handled("verbose", "advisories", "json", "jsonpath", "booted", "pending_exit_77",
                                 "pretty")),
    "install": (_install, _handled("packages", "idempotent", "allow_inactive", "reboot")),
    "uninstall": (_uninstall, _handled("packages", "idempotent", "reboot")),
    "pkg-add": (_install, _handled("packages", "idempotent", "allow_inactive", "reboot")),
    "pkg-remove": (_uninstall, _handled("packages", "idempotent", "reboot")),
    "remove": (_uninstall, _handled("packages", "idempotent", "reboot")),
    "override remove": (_override_remove, _handled("packages", "reboot")),
    "override replace": (_override_replace, _handled("packages", "remove", "reboot")),
    "override reset": (_override_reset, _handled("packages", "all", "reboot")),
    "reset": (_reset, _handled("reboot", "overlays", "overrides", "initramfs")),
    "upgrade": (_upgrade, _handled("download_only", "reboot", "check", "preview", "allow_downgrade",
                                   "trigger_automatic_update_policy")),
    "update": (_upgrade, _handled("download_only", "reboot", "check", "preview", "allow_downgrade",
                                  "trigger_automatic_update_policy")),
    "deploy": (_deploy, _handled("revision", "reboot", "install", "uninstall", "cache_only", "lock_finalization")),
    "rebase": (_rebase, _handled("refspec", "revision", "reboot", "install", "uninstall", "cache_only",
                                 "lock_finalization")),
    "rollback": (_rollback, _handled("reboot")),
    "kargs": (_kargs, _handled("append", "delete", "replace", "reboot")),
    "cleanup": (_cleanup, _handled("pending", "rollback", "base", "repomd")),
    "refresh-md": (_refresh_md, _handled("force")),
    "makecache": (_refresh_md, _handled("force")),
    "cancel": (_cancel, _handled()),
    "reload": (_reload, _handled()),
    "finalize-deployment": (_finalize, _handled("checksum", "allow_missing_checksum", "allow_unlocked")),
}
