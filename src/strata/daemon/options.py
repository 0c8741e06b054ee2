"""The option dictionaries of rpm-ostree's OS methods: which keys strata implements, with their D-Bus types.
A key that is not listed is refused with a clear error rather than ignored."""

from __future__ import annotations

from typing import Any

from gi.repository import GLib

from strata.errors import InvalidInputError

COMMON = {"reboot": "b", "initiating-command-line": "s"}
METHOD_OPTIONS: dict[str, dict[str, str]] = {
    "PkgChange": {**COMMON, "idempotent-layering": "b", "allow-inactive-requests": "b"},
    "Upgrade": {**COMMON, "allow-downgrade": "b", "download-only": "b"},
    "Deploy": {**COMMON, "allow-downgrade": "b"},
    "Rebase": {**COMMON, "skip-purge": "b", "revision": "s"},
    "Rollback": COMMON,
    "KernelArgs": COMMON,
    "RefreshMd": {"force": "b"},
    "FinalizeDeployment": {"checksum": "s", "allow-missing-checksum": "b", "allow-unlocked": "b"},
    "AutomaticUpdateTrigger": {"mode": "s", "output-to-self": "b"},
    "UpdateDeployment": {**COMMON, "idempotent-layering": "b", "allow-inactive-requests": "b",
                         "allow-downgrade": "b", "skip-purge": "b", "no-layering": "b", "no-overrides": "b",
                         "download-only": "b", "dry-run": "b", "cache-only": "b", "lock-finalization": "b",
                         "no-pull-base": "b", "no-initramfs": "b"},
}
MODIFIERS = {"set-refspec": "s", "set-revision": "s", "install-packages": "as", "uninstall-packages": "as",
             "override-remove-packages": "as", "override-reset-packages": "as",
             "install-local-packages": "ah", "override-replace-local-packages": "ah"}
LOCAL_PACKAGE_MODIFIERS = {"install-local-packages": "add-local", "override-replace-local-packages": "replace-local"}


class UnknownOptionError(InvalidInputError):
    """An option key or type that strata does not implement."""


def unpack(method: str, options: GLib.Variant, allowed: dict[str, str] | None = None) -> dict[str, Any]:
    """The a{sv} as plain values, every key checked against the method's list and its type."""
    known = METHOD_OPTIONS.get(method, {}) if allowed is None else allowed
    values: dict[str, Any] = {}
    for index in range(options.n_children()):
        entry = options.get_child_value(index)
        key = entry.get_child_value(0).get_string()
        value = entry.get_child_value(1).get_variant()
        if key not in known:
            raise UnknownOptionError(f"{method}: unknown option '{key}'")
        if value.get_type_string() != known[key]:
            raise UnknownOptionError(f"{method}: option '{key}' must be of type '{known[key]}', "
                                     f"not '{value.get_type_string()}'")
        values[key] = value.unpack()
    return values
