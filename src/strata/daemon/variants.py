"""Deployment and package dictionaries as rpm-ostree's D-Bus API types them (a{sv} members with its names)."""

from __future__ import annotations

from typing import Any

from gi.repository import GLib

from strata.core.pkgdiff import PackageDiff
from strata.core.status import cached_update_record, deployment_record, filtered_meta
from strata.image import gvariant
from strata.image.gvariant import Variant
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot

NEVRA_TYPE = "(sstsss)"
MEMBER_TYPES = {
    "id": "s", "osname": "s", "serial": "i", "checksum": "s", "booted": "b", "staged": "b", "pinned": "b",
    "unlocked": "s", "origin": "s", "version": "s", "timestamp": "t", "packages": "as",
    "base-removals": f"a{NEVRA_TYPE}", "base-local-replacements": f"a({NEVRA_TYPE}{NEVRA_TYPE})",
    "requested-packages": "as", "requested-local-packages": "as", "requested-base-removals": "as",
    "requested-base-local-replacements": "as", "regenerate-initramfs": "b", "base-checksum": "s",
    "base-version": "s", "base-timestamp": "t", "live-replaced": "s", "live-inprogress": "s",
    "requested-local-fileoverride-packages": "as", "initramfs-args": "as", "initramfs-etc": "as", "endoflife": "s",
    "gpg-enabled": "b",
}

# rpm-ostree's RpmOstreePkgTypes: the u of GetDeploymentsRpmDiff's (sua{sv}) entries
PKG_ADDED, PKG_REMOVED, PKG_UPGRADED, PKG_DOWNGRADED = 0, 1, 2, 3


def typed_members(values: dict[str, Any], types: dict[str, str]) -> dict[str, GLib.Variant]:
    """The members that have a known type and a value (None means absent), as variants."""
    return {key: GLib.Variant(types[key], _plain(value)) for key, value in values.items()
            if key in types and value is not None}


def typed_dict(values: dict[str, Any], types: dict[str, str]) -> GLib.Variant:
    return GLib.Variant("a{sv}", typed_members(values, types))


def meta_variant(entries: list[tuple[str, Variant]]) -> GLib.Variant:
    """Commit metadata (strata's decoding) as a GLib a{sv}: each value re-encoded and checked by GLib."""
    members = {}
    for key, value in entries:
        data = gvariant.encode(value.type, value.value)
        members[key] = GLib.Variant.new_from_bytes(GLib.VariantType(value.type), GLib.Bytes.new(data), False)
    return GLib.Variant("a{sv}", members)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return tuple(_plain(item) for item in value) if isinstance(value, tuple) else value


def deployment_members(sysroot: Sysroot, dep: Deployment, booted: Deployment | None) -> dict[str, Any]:
    members = deployment_record(sysroot, dep, booted)
    members["base-removals"] = [tuple(item) for item in members["base-removals"]]
    members["base-local-replacements"] = [(tuple(new), tuple(old)) for new, old in members["base-local-replacements"]]
    return members


def deployment_variant(sysroot: Sysroot, dep: Deployment | None, booted: Deployment | None) -> GLib.Variant:
    """rpm-ostree's deployment dictionary; an empty one when there is no such deployment."""
    if dep is None:
        return GLib.Variant("a{sv}", {})
    members = deployment_members(sysroot, dep, booted)
    entries = typed_members(members, MEMBER_TYPES)
    commit = sysroot.repo.load_commit(dep.csum)
    if "layered-commit-meta" in members and commit.parent:
        entries["layered-commit-meta"] = meta_variant(filtered_meta(commit))
        commit = sysroot.repo.load_commit(commit.parent)
    entries["base-commit-meta"] = meta_variant(filtered_meta(commit))
    entries["base-remote-replacements"] = GLib.Variant("a{sv}", {})
    if "signatures" in members:
        entries["signatures"] = GLib.Variant("aa{sv}", [{key: GLib.Variant("b", bool(value))
                                                         for key, value in item.items()}
                                                        for item in members["signatures"]])
    return GLib.Variant("a{sv}", entries)


def nevra_details(nevra: Nevra) -> dict[str, GLib.Variant]:
    return {"name": GLib.Variant("s", nevra.name), "epoch": GLib.Variant("t", nevra.epoch),
            "version": GLib.Variant("s", nevra.version), "release": GLib.Variant("s", nevra.release),
            "arch": GLib.Variant("s", nevra.arch), "evr": GLib.Variant("s", nevra.evr),
            "nevra": GLib.Variant("s", nevra.nevra)}


def rpm_diff_entries(diff: PackageDiff) -> list[tuple[str, int, dict[str, GLib.Variant]]]:
    """GetDeploymentsRpmDiff's a(sua{sv}): name, change type, then "PreviousPackage"/"NewPackage" details."""
    entries: list[tuple[str, int, dict[str, GLib.Variant]]] = []
    for old, new in diff.upgraded:
        entries.append((new.name, PKG_UPGRADED, _pair(old, new)))
    for old, new in diff.downgraded:
        entries.append((new.name, PKG_DOWNGRADED, _pair(old, new)))
    for pkg in diff.removed:
        entries.append((pkg.name, PKG_REMOVED, {"PreviousPackage": _pkg(pkg)}))
    for pkg in diff.added:
        entries.append((pkg.name, PKG_ADDED, {"NewPackage": _pkg(pkg)}))
    return entries


def _pkg(nevra: Nevra) -> GLib.Variant:
    return GLib.Variant("(sss)", (nevra.name, nevra.evr, nevra.arch))


def _pair(old: Nevra, new: Nevra) -> dict[str, GLib.Variant]:
    return {"PreviousPackage": _pkg(old), "NewPackage": _pkg(new)}


def cached_update_variant(values: dict[str, Any]) -> GLib.Variant:
    """The OS object's CachedUpdate, with rpm-ostree's `rpm-diff` (upgraded/downgraded a(us(ss)(ss)),
    removed/added a(usss))."""
    types = {"osname": "s", "checksum": "s", "version": "s", "timestamp": "t", "origin": "s",
             "ref-has-new-commit": "b", "gpg-enabled": "b"}
    members = typed_members(values, types)
    record = cached_update_record(values)
    if record is not None and "rpm-diff" in record:
        diff = record["rpm-diff"]
        members["rpm-diff"] = GLib.Variant("a{sv}", {
            **{key: GLib.Variant("a(us(ss)(ss))", [(t, n, tuple(o), tuple(v)) for t, n, o, v in diff[key]])
               for key in ("upgraded", "downgraded")},
            **{key: GLib.Variant("a(usss)", [tuple(item) for item in diff[key]]) for key in ("removed", "added")}})
    return GLib.Variant("a{sv}", members)
