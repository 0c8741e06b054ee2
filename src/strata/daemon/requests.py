"""From an OS method call to a worker job: the arguments checked, the title rpm-ostree would show, and the
polkit actions the call needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gi.repository import GLib

from strata.daemon.authority import METHOD_ACTIONS, MODIFIER_ACTIONS
from strata.daemon.config import FleetLockConfig
from strata.daemon.options import LOCAL_PACKAGE_MODIFIERS, MODIFIERS, UnknownOptionError, unpack
from strata.daemon.worker import Job
from strata.errors import InvalidInputError

CLEANUP_ELEMENTS = ("base", "pending-deploy", "rollback-deploy", "repomd")
RESET_OPTIONS = {"no-layering": "overlays", "no-overrides": "overrides", "no-initramfs": "initramfs"}


@dataclass
class Request:
    job: Job
    title: str
    actions: list[str] = field(default_factory=list)
    # RPMs passed as file descriptors: the job argument that receives their copies -> indices in the fd list
    local_fds: dict[str, list[int]] = field(default_factory=dict)


def build_request(method: str, params: GLib.Variant, sysroot: str, stateroot: str) -> Request:
    """The job for one of the OS interface's transaction methods; InvalidInputError for bad arguments."""
    builder = BUILDERS.get(method)
    if builder is None:
        raise InvalidInputError(f"{method} is not implemented by strata's daemon")
    request = builder(params, Job(sysroot, "", stateroot))
    if not request.actions:
        request.actions = [METHOD_ACTIONS[method]]
    return request


def _finish(job: Job, verb: str, options: dict[str, Any], title: str, **args: Any) -> Request:
    job.verb = verb
    job.args = args
    job.reboot = bool(options.get("reboot"))
    return Request(job, str(options.get("initiating-command-line") or title))


def _pkg_change(params: GLib.Variant, job: Job) -> Request:
    options = unpack("PkgChange", params.get_child_value(0))
    add, remove = params.get_child_value(1).unpack(), params.get_child_value(2).unpack()
    if not add and not remove:
        raise InvalidInputError("PkgChange: no packages to add or remove")
    words = [*(["install", *add] if add else []), *(["uninstall", *remove] if remove else [])]
    return _finish(job, "pkgchange", options, " ".join(words), add=add, remove=remove,
                   idempotent=options.get("idempotent-layering", False),
                   **{"allow-inactive": options.get("allow-inactive-requests", False)})


def _upgrade(params: GLib.Variant, job: Job) -> Request:
    options = unpack("Upgrade", params.get_child_value(0))
    return _finish(job, "upgrade", options, "upgrade", **_change_args(options))


# Options of the base-changing methods that become the engine's ChangeOptions (strata.core.client).
CHANGE_OPTION_KEYS = ("allow-downgrade", "download-only", "dry-run", "cache-only", "lock-finalization")


def _change_args(options: dict[str, Any], install: list[str] | None = None,
                 uninstall: list[str] | None = None) -> dict[str, Any]:
    """The worker's arguments for the engine's ChangeOptions: packages to (un)install with the change, and
    the options given (absent ones keep the verb's default)."""
    values: dict[str, Any] = {key: options[key] for key in CHANGE_OPTION_KEYS if key in options}
    values.update({"install": install or [], "uninstall": uninstall or [],
                   "idempotent": options.get("idempotent-layering", False),
                   "allow-inactive": options.get("allow-inactive-requests", False)})
    return values


def _deploy(params: GLib.Variant, job: Job) -> Request:
    revision = params.get_child_value(0).get_string()
    options = unpack("Deploy", params.get_child_value(1))
    if not revision:
        raise InvalidInputError("Deploy: a revision is required")
    return _finish(job, "deploy", options, f"deploy {revision}", revision=revision, **_change_args(options))


def _rebase(params: GLib.Variant, job: Job) -> Request:
    options = unpack("Rebase", params.get_child_value(0))
    refspec = params.get_child_value(1).get_string()
    packages = params.get_child_value(2).unpack()  # rpm-ostree's: packages to install with the new base
    return _finish(job, "rebase", options, f"rebase {refspec}", refspec=refspec, revision=options.get("revision"),
                   **_change_args(options, install=packages))


def _rollback(params: GLib.Variant, job: Job) -> Request:
    return _finish(job, "rollback", unpack("Rollback", params.get_child_value(0)), "rollback")


def _kernel_args(params: GLib.Variant, job: Job) -> Request:
    added, replaced, removed = (params.get_child_value(i).unpack() for i in (1, 2, 3))
    options = unpack("KernelArgs", params.get_child_value(4))
    words = [*(f"--append={a}" for a in added), *(f"--replace={a}" for a in replaced),
             *(f"--delete={a}" for a in removed)]
    return _finish(job, "kargs", options, " ".join(["kargs", *words]), append=added, replace=replaced,
                   delete=removed)


def _cleanup(params: GLib.Variant, job: Job) -> Request:
    elements = params.get_child_value(0).unpack()
    unknown = [e for e in elements if e not in CLEANUP_ELEMENTS]
    if unknown:
        raise UnknownOptionError(f"Cleanup: unknown element '{unknown[0]}'")
    return _finish(job, "cleanup", {}, " ".join(["cleanup", *elements]), elements=elements)


def _refresh_md(params: GLib.Variant, job: Job) -> Request:
    options = unpack("RefreshMd", params.get_child_value(0))
    return _finish(job, "refresh-md", options, "refresh-md", force=options.get("force", False))


def _finalize(params: GLib.Variant, job: Job) -> Request:
    options = unpack("FinalizeDeployment", params.get_child_value(0))
    if "checksum" not in options and not options.get("allow-missing-checksum"):
        raise InvalidInputError("Missing expected checksum (or allow-missing-checksum)")
    return _finish(job, "finalize", options, "finalize-deployment", checksum=options.get("checksum"))


def _update_deployment(params: GLib.Variant, job: Job) -> Request:
    modifiers = unpack("UpdateDeployment", params.get_child_value(0), MODIFIERS)
    options = unpack("UpdateDeployment", params.get_child_value(1))
    actions = sorted({MODIFIER_ACTIONS[key] for key in modifiers} | {MODIFIER_ACTIONS[key] for key in
                     RESET_OPTIONS if options.get(key)}) or ["upgrade"]
    request = _modifier_request(modifiers, options, job)
    request.actions = actions
    request.local_fds = {arg: list(modifiers[key]) for key, arg in LOCAL_PACKAGE_MODIFIERS.items()
                         if modifiers.get(key)}
    return request


def _modifier_request(modifiers: dict[str, Any], options: dict[str, Any], job: Job) -> Request:
    """UpdateDeployment runs one kind of change per call in strata."""
    kinds = {"base" if key in ("set-refspec", "set-revision") else
             "packages" if key.endswith(("install-packages", "install-local-packages")) else "overrides"
             for key in modifiers}
    kinds |= {"reset" for key in RESET_OPTIONS if options.get(key)}
    if len(kinds - {"base", "packages"}) + bool(kinds & {"base", "packages"}) > 1:
        raise UnknownOptionError(f"UpdateDeployment: combining {' and '.join(sorted(kinds))} is not implemented")
    if "base" in kinds:  # a new base, perhaps with packages to (un)install in the same change
        change = _change_args(options, modifiers.get("install-packages"), modifiers.get("uninstall-packages"))
        if "set-refspec" in modifiers:
            refspec = modifiers["set-refspec"]
            return _finish(job, "rebase", options, f"rebase {refspec}", refspec=refspec,
                           revision=modifiers.get("set-revision"), **change)
        revision = modifiers["set-revision"]
        return _finish(job, "deploy", options, f"deploy {revision}", revision=revision, **change)
    if kinds == {"packages"}:
        add, remove = modifiers.get("install-packages", []), modifiers.get("uninstall-packages", [])
        local = len(modifiers.get("install-local-packages", []))
        words = [*(["install", *add] if add or local else []), *([f"({local} local packages)"] if local else []),
                 *(["uninstall", *remove] if remove else [])]
        return _finish(job, "pkgchange", options, " ".join(words), add=add, remove=remove,
                       idempotent=options.get("idempotent-layering", False),
                       **{"allow-inactive": options.get("allow-inactive-requests", False)})
    if kinds == {"overrides"}:
        remove, reset = modifiers.get("override-remove-packages", []), modifiers.get("override-reset-packages", [])
        local = len(modifiers.get("override-replace-local-packages", []))
        words = ["override", *remove, *reset, *([f"({local} local packages)"] if local else [])]
        return _finish(job, "override", options, " ".join(words), remove=remove, reset=reset)
    if kinds == {"reset"}:  # each option takes away its part (rpm-ostree's reset sends all three)
        parts = {part: bool(options.get(key)) for key, part in RESET_OPTIONS.items()}
        return _finish(job, "reset", options, "reset", **parts)
    return _finish(job, "upgrade", options, "upgrade", **_change_args(options))


def automatic_request(mode: str, job: Job, fleetlock: FleetLockConfig | None) -> Request:
    job.verb, job.args = "automatic", {"mode": mode, "fleetlock": asdict(fleetlock) if fleetlock else None}
    return Request(job, f"automatic ({mode})", ["upgrade"])


BUILDERS = {
    "PkgChange": _pkg_change, "Upgrade": _upgrade, "Deploy": _deploy, "Rebase": _rebase, "Rollback": _rollback,
    "KernelArgs": _kernel_args, "Cleanup": _cleanup, "RefreshMd": _refresh_md, "FinalizeDeployment": _finalize,
    "UpdateDeployment": _update_deployment,
}
