"""One transaction in its own process: `python -m strata.daemon.worker FD JOB_JSON` runs a job of the core
engine and reports its progress as JSON lines on FD, one per rpm-ostree Transaction signal, Finished last.

A process of its own per transaction keeps the daemon responsive and lets Cancel use the engine's own
cancellation (the cancel signal, SIGTERM, handled by `core.transaction.Transaction`)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from strata.core import client
from strata.core import upgrade as upgrades
from strata.core.admin import boot, finalize_staged
from strata.core.origin import Origin
from strata.core.transaction import Transaction
from strata.errors import InvalidInputError, StrataError
from strata.sysroot.deploy import KargEdits
from strata.sysroot.sysroot import Sysroot


class PipeProgress:
    """The engine's Progress as JSON lines: [signal name, arguments...]. Finished is held back until the job
    (and anything it does after its transaction frame closed, such as a reboot) is over."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.time()
        self.outcome: tuple[bool, str] | None = None

    def emit(self, name: str, *args: Any) -> None:
        self.stream.write(json.dumps([name, *args]) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.emit("Message", text)

    def task_begin(self, text: str) -> None:
        self.emit("TaskBegin", text)

    def task_end(self, text: str) -> None:
        self.emit("TaskEnd", text)

    def percent(self, text: str, percentage: int) -> None:
        self.emit("PercentProgress", text, percentage)

    def download(self, fetched_objects: int, fetched_bytes: int) -> None:
        elapsed = max(int(time.time() - self.started), 0)
        self.emit("DownloadProgress", [int(self.started), elapsed], [0, 0], [0, 0, 0], [0, 0, 0, 0],
                  [fetched_objects, fetched_objects], [fetched_bytes, fetched_bytes // max(elapsed, 1)])

    def progress_end(self) -> None:
        self.emit("ProgressEnd")

    def finished(self, success: bool, error_message: str) -> None:
        if self.outcome is None or not success:
            self.outcome = (success, error_message)


@dataclass
class Job:
    """What the daemon asks for: a verb and its already validated arguments."""

    sysroot: str
    verb: str
    stateroot: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    reboot: bool = False


@dataclass
class _PresetContext(client.Context):
    """A context whose origin is a change already built in the same transaction (PkgChange adds and removes
    in one change)."""

    preset: Origin | None = None

    def origin(self) -> Origin:
        return self.preset if self.preset is not None else super().origin()


@dataclass
class _PkgChange:
    add: list[str]
    remove: list[str]
    options: client.InstallOptions

    def __call__(self, txn: Transaction, ctx: client.Context) -> client.Change | None:
        change = client.UninstallChange(self.remove, self.options.idempotent)(txn, ctx) if self.remove else None
        if self.add:
            preset = _PresetContext(**vars(ctx), preset=change.origin if change else None)
            change = client.InstallChange(self.add, self.options)(txn, preset)
        return change


def _report(progress: PipeProgress, outcome: client.Outcome, none_text: str = "No change.") -> None:
    if not outcome.changed:
        progress.message(none_text)


def _pkg_change(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    add = [*job.args.get("add", []), *job.args.get("add-local", [])]
    remove = list(job.args.get("remove", []))
    options = client.InstallOptions(idempotent=bool(job.args.get("idempotent")),
                                    allow_inactive=bool(job.args.get("allow-inactive")))
    verb = "uninstall" if not add else "install" if not remove else "pkgchange"
    words = [*add, *(f"-{name}" for name in remove)] if verb == "pkgchange" else [*add, *remove]
    _report(progress, client.run_verb(sysroot, job.stateroot, verb, words, progress,
                                      _PkgChange(add, remove, options)))


def _change_options(job: Job, **defaults: Any) -> client.ChangeOptions:
    """The engine's ChangeOptions from the job (strata.daemon.requests._change_args); DEFAULTS for what the
    caller did not say (upgrade refuses downgrades unless asked)."""
    args = job.args
    values: dict[str, Any] = {**defaults, "install": tuple(args.get("install", [])),
                              "uninstall": tuple(args.get("uninstall", [])),
                              "idempotent": bool(args.get("idempotent")),
                              "allow_inactive": bool(args.get("allow-inactive"))}
    for key in ("allow-downgrade", "download-only", "dry-run", "cache-only", "lock-finalization"):
        if key in args:
            values[key.replace("-", "_")] = bool(args[key])
    return client.ChangeOptions(**values)


def _upgrade(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    options = _change_options(job, allow_downgrade=False)
    if options.download_only and not (options.install or options.uninstall):
        upgrades.download_update(sysroot, job.stateroot, progress)
        return
    try:
        outcome = upgrades.upgrade(sysroot, job.stateroot, progress, options)
    except upgrades.PinnedError as exc:
        progress.message(str(exc))
        return
    _report(progress, outcome, "No upgrade available.")


def _deploy(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    outcome = upgrades.deploy_revision(sysroot, job.stateroot, job.args["revision"], progress, _change_options(job))
    _report(progress, outcome)


def _rebase(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    outcome = upgrades.rebase(sysroot, job.stateroot, job.args["refspec"], job.args.get("revision"), progress,
                              _change_options(job))
    _report(progress, outcome)


def _rollback(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    client.rollback(sysroot, progress)


def _kargs(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    edits = KargEdits(replace=list(job.args.get("replace", [])), append=list(job.args.get("append", [])),
                      delete=list(job.args.get("delete", [])))
    _report(progress, client.kargs(sysroot, job.stateroot, edits, progress), "No changes.")


def _cleanup(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    elements = set(job.args.get("elements", []))
    request = client.CleanupRequest(pending="pending-deploy" in elements, rollback="rollback-deploy" in elements,
                                    base="base" in elements, repomd="repomd" in elements)
    if not client.cleanup(sysroot, job.stateroot, request, progress) and (request.pending or request.rollback):
        progress.message("Deployments unchanged.")


def _refresh_md(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    if not client.refresh_md(sysroot, job.stateroot, bool(job.args.get("force")), progress):
        progress.message("No enabled rpm-md repositories.")


def _override(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    remove, reset = list(job.args.get("remove", [])), list(job.args.get("reset", []))
    replace = list(job.args.get("replace-local", []))
    if replace:  # with the removals in the same change
        _report(progress, client.override_replace(sysroot, job.stateroot, replace, progress, remove))
        remove = []
    if remove:
        _report(progress, client.override_remove(sysroot, job.stateroot, remove, progress))
    if reset:
        _report(progress, client.override_reset(sysroot, job.stateroot, reset, False, progress))


def _reset(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    request = client.ResetRequest(bool(job.args.get("overlays")), bool(job.args.get("overrides")),
                                  bool(job.args.get("initramfs")))
    _report(progress, client.reset(sysroot, job.stateroot, progress, request))


def _finalize(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    staged = sysroot.staged_deployment()
    wanted = job.args.get("checksum")
    if staged is None:
        raise StrataError("No staged deployment found")
    if wanted and staged.csum != wanted:
        raise StrataError(f"Expected staged base checksum {wanted}, but found {staged.csum}")
    finalize_staged(sysroot, progress)
    boot(sysroot, progress)


def _automatic(sysroot: Sysroot, job: Job, progress: PipeProgress) -> None:
    from strata.daemon.automatic import run_policy
    from strata.daemon.config import FleetLockConfig
    fleetlock = job.args.get("fleetlock")
    run_policy(sysroot, job.stateroot, str(job.args["mode"]), progress,
               FleetLockConfig(**fleetlock) if isinstance(fleetlock, dict) else None)


VERBS: dict[str, Callable[[Sysroot, Job, PipeProgress], None]] = {
    "pkgchange": _pkg_change, "upgrade": _upgrade, "deploy": _deploy, "rebase": _rebase, "rollback": _rollback,
    "kargs": _kargs, "cleanup": _cleanup, "refresh-md": _refresh_md, "override": _override, "reset": _reset,
    "finalize": _finalize, "automatic": _automatic,
}


def run_job(job: Job, progress: PipeProgress) -> None:
    """Run the job; Finished(success, error) is the last thing reported, whatever happens."""
    try:
        verb = VERBS.get(job.verb)
        if verb is None:
            raise InvalidInputError(f"unknown transaction verb '{job.verb}'")
        sysroot = Sysroot.open(job.sysroot)
        verb(sysroot, job, progress)
        if job.reboot and (progress.outcome is None or progress.outcome[0]):
            boot(sysroot, progress)
    except StrataError as exc:
        progress.finished(False, str(exc))
    except Exception as exc:  # a bug still ends the transaction with Finished, in one line
        progress.finished(False, f"internal error ({type(exc).__name__}): {exc}")
    success, error = progress.outcome or (True, "")
    progress.emit("Finished", success, error)


def main(argv: list[str]) -> int:
    fd, spec = int(argv[1]), json.loads(argv[2])
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        sys.stdout = sys.stderr  # anything printed by lower layers must not mix with the signal lines
        run_job(Job(**spec), PipeProgress(stream))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
