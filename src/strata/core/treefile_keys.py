"""Every treefile key rpm-ostree documents (docs/treefile.md), and what strata does with it.

A key is either implemented (its effect is tested) or refused with one message; some implemented keys
accept only the values strata can honour and refuse the others. Nothing is accepted and then ignored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata.errors import InvalidInputError

IMPLEMENTED = "implemented"
REFUSED = "refused"


@dataclass(frozen=True)
class KeySupport:
    status: str
    why: str  # one line for docs/treefile.md
    values: tuple[Any, ...] | None = None  # the only values accepted, when strata honours a subset


def _on(why: str, values: tuple[Any, ...] | None = None) -> KeySupport:
    return KeySupport(IMPLEMENTED, why, values)


def _off(why: str) -> KeySupport:
    return KeySupport(REFUSED, why)


DOCUMENTED_KEYS: dict[str, KeySupport] = {
    "edition": _on("2014 (default) or 2024 (boot-location modules, tmp-is-dir true)", ("2014", "2024", 2014, 2024)),
    "ref": _on("the branch written; variables substituted"),
    "metadata": _on("free-form data for other tools, kept in the expanded treefile"),
    "gpg-key": _on("the commit is signed with this key from the caller's gpg home directory"),
    "gpg_key": _on("legacy spelling of gpg-key"),
    "repos": _on("the .repo files next to the treefile, these ids only"),
    "selinux": _on("strata never labels files; only false is accepted", (False,)),
    "ignore-devices": _on("character and block devices are dropped before the commit; false is refused", (True,)),
    "ima": _on("IMA signatures are never propagated; only false is accepted", (False,)),
    "boot-location": _on("new: kernel also in /usr/lib/ostree-boot; modules: /usr/lib/modules only; "
                         "kernel-install is refused", ("new", "modules")),
    "boot_location": _on("legacy spelling of boot-location", ("new", "modules")),
    "etc-group-members": _on("these groups stay in /etc/group"),
    "install-langs": _on("files of packages whose %lang matches none of these are left out"),
    "mutate-os-release": _on("VERSION/PRETTY_NAME rewritten, OSTREE_VERSION added"),
    "documentation": _on("false leaves out %doc files"),
    "packages": _on("solved with libsolv; whitespace split, quoted constraints"),
    "packages-$basearch": _on("added when $basearch is the compose architecture"),
    "exclude-packages": _on("locked out of the solution"),
    "repo-packages": _on("these packages come from the named repository only"),
    "ostree-layers": _on("commits of the target repository merged over the packages; a differing file is an error"),
    "ostree-override-layers": _on("like ostree-layers, their files replace those of packages"),
    "container-cmd": _on("recorded as ostree.container-cmd commit metadata"),
    "bootstrap_packages": _on("merged into packages (deprecated upstream)"),
    "recommends": _on("weak dependencies installed or not"),
    "units": _on("enabled in multi-user.target.wants; a unit the tree does not ship is an error"),
    "default-target": _on("the default.target symlink"),
    "default_target": _on("legacy spelling of default-target"),
    "initramfs-args": _on("recorded as rpmostree.initramfs-args (strata uses the kernel package's initramfs)"),
    "rpmdb": _on("strata writes the sqlite rpmdb the target's rpm reads: target (or sqlite); "
                 "host, bdb and ndb are refused", ("target", "sqlite")),
    "rpmdb-normalize": _on("the sqlite rpmdb needs no normalizing; only false is accepted", (False,)),
    "selinux-label-version": _off("strata does no SELinux labeling"),
    "cliwrap": _on("strata installs no CLI wrappers; only false is accepted", (False,)),
    "cliwrap-binaries": _off("strata installs no CLI wrappers"),
    "readonly-executables": _on("executables lose their write bits in the commit"),
    "remove-files": _on("paths deleted from the tree"),
    "remove-from-packages": _on("files of the named package matching a regular expression are left out"),
    "preserve-passwd": _on("accounts of the previous commit (or the check-* file) are kept, so ids stay stable"),
    "check-passwd": _on("none, previous, file or data: the new /etc/passwd must keep these uids/gids"),
    "check-groups": _on("none, previous, file or data: the new /etc/group must keep these gids"),
    "ignore-removed-users": _on("users that check-passwd lets go missing ('*' for any)"),
    "ignore-removed-groups": _on("groups that check-groups lets go missing ('*' for any)"),
    "releasever": _on("a variable and the $releasever of .repo files"),
    "automatic-version-prefix": _on("versions 22, 22.1, 22.2, <date:...> tags"),
    "automatic_version_prefix": _on("legacy spelling of automatic-version-prefix"),
    "automatic-version-suffix": _on("one ASCII character between prefix and counter"),
    "add-commit-metadata": _on("commit metadata; --add-metadata-string overrides"),
    "postprocess-script": _on("run in the tree in the package script sandbox"),
    "postprocess": _on("inline scripts, included files' first"),
    "include": _on("merged by rpm-ostree's rules"),
    "arch-include": _on("included when the key is the compose architecture"),
    "conditional-include": _on("included when every condition holds; the includer's variables are visible"),
    "container": _on("no kernel required, tmp-is-dir, no passwd checks, not bootable"),
    "add-files": _on("files next to the treefile copied into /usr or /etc"),
    "tmp-is-dir": _on("/tmp a directory instead of a link to /sysroot/tmp"),
    "machineid-compat": _on("false: no empty /usr/etc/machine-id"),
    "platform-module": _off("strata does not support RPM modularity"),
    "variables": _on("substituted as ${name} and used in conditions"),
    "repo-metadata": _on("rpmostree.rpmmd-repos inline, detached or disabled", ("inline", "detached", "disabled")),
    "advisories-metadata": _on("strata reads no updateinfo; only disabled is accepted", ("disabled",)),
    "lockfile-repos": _on("repositories used only for packages a lockfile pins"),
    "repovars": _on("$name substitutions in .repo files"),
    "sysusers": _on("compose-auto: systemd-sysusers runs when the tree defines %__systemd_sysusers; "
                    "compose-forced: always", ("compose-auto", "compose-forced")),
    "opt-usrlocal": _on("var: /opt and /usr/local link into /var; root: plain directories", ("var", "root")),
    "no-initramfs": _on("true: the kernel package need not ship an initramfs"),
}

# Keys rpm-ostree reads but does not document: strata refuses them too.
UNDOCUMENTED_REFUSED = {"rojig": "rpm-ostree's rojig mode was removed upstream"}


def refusal(key: str) -> str:
    return f"treefile key '{key}' is not supported by strata"


def check_supported(key: str, value: Any, source: str) -> None:
    """Refuse a documented key strata cannot honour, or a value of it that strata cannot honour."""
    if value is None:
        return
    support = DOCUMENTED_KEYS.get(key) or DOCUMENTED_KEYS.get("packages-$basearch" if key.startswith("packages-")
                                                             else "")
    if key in UNDOCUMENTED_REFUSED or (support is not None and support.status == REFUSED):
        raise InvalidInputError(f"{source}: {refusal(key)}")
    if support is not None and support.values is not None and not _allowed(value, support.values):
        raise InvalidInputError(f"{source}: treefile key '{key}': value {value!r} is not supported by strata "
                                f"(accepted: {', '.join(repr(v) for v in support.values)})")


def _allowed(value: Any, values: tuple[Any, ...]) -> bool:
    return any(type(value) is type(allowed) and value == allowed for allowed in values)
