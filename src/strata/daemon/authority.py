"""Who may do what: root always; other callers read freely and change only what polkit authorizes, checked
against rpm-ostree's action ids (org.freedesktop.PolicyKit1.Authority.CheckAuthorization)."""

from __future__ import annotations

from gi.repository import Gio, GLib

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"
ACTION_PREFIX = "org.projectatomic.rpmostree1."
ALLOW_USER_INTERACTION = 1

# rpm-ostree's action for each method (UpdateDeployment and PkgChange decide from their arguments)
METHOD_ACTIONS = {
    "Upgrade": "upgrade", "Deploy": "deploy", "Rebase": "rebase", "Rollback": "rollback",
    "KernelArgs": "bootconfig", "Cleanup": "cleanup", "RefreshMd": "repo-refresh",
    "FinalizeDeployment": "finalize-deployment", "AutomaticUpdateTrigger": "upgrade",
    "PkgChange": "install-uninstall-packages", "Cancel": "cancel", "Reload": "reload-daemon",
    "ReloadConfig": "reload-daemon", "RegisterClient": "client-management", "UnregisterClient": "client-management",
}
MODIFIER_ACTIONS = {
    "set-refspec": "rebase", "set-revision": "deploy", "install-packages": "install-uninstall-packages",
    "uninstall-packages": "install-uninstall-packages", "override-remove-packages": "override",
    "override-reset-packages": "override", "no-layering": "install-uninstall-packages", "no-overrides": "override",
    "install-local-packages": "install-uninstall-packages", "override-replace-local-packages": "override",
    "no-initramfs": "bootconfig",
}


def caller_uid(bus: Gio.DBusConnection, sender: str) -> int:
    reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                          "GetConnectionUnixUser", GLib.Variant("(s)", (sender,)), GLib.VariantType("(u)"),
                          Gio.DBusCallFlags.NONE, -1, None)
    return int(reply.unpack()[0])


def polkit_allows(bus: Gio.DBusConnection, sender: str, action: str, interactive: bool = False) -> bool:
    """polkit's answer for this bus name; no polkit (or an error from it) means no."""
    subject = ("system-bus-name", {"name": GLib.Variant("s", sender)})
    flags = ALLOW_USER_INTERACTION if interactive else 0
    params = GLib.Variant("((sa{sv})sa{ss}us)", (subject, ACTION_PREFIX + action, {}, flags, ""))
    try:
        reply = bus.call_sync(POLKIT_NAME, POLKIT_PATH, POLKIT_IFACE, "CheckAuthorization", params,
                              GLib.VariantType("((bba{ss}))"), Gio.DBusCallFlags.NONE, 30000, None)
    except GLib.Error:
        return False
    return bool(reply.unpack()[0][0])


def authorized(bus: Gio.DBusConnection, sender: str, actions: list[str]) -> bool:
    """Root always; anyone else needs every action from polkit."""
    if caller_uid(bus, sender) == 0:
        return True
    return all(polkit_allows(bus, sender, action) for action in actions)
