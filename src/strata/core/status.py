"""What `status` reports, as data: the members of rpm-ostree's deployment dictionary (shared by `status --json`,
the daemon's Deployments property and the benchmarks), the cached update in rpm-ostree's shape, the
automatic-updates header line, and the subset of JSONPath that `status -J` understands."""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass
from typing import Any

from strata.core import livefs
from strata.core.origin import Origin
from strata.core.pkgdiff import PackageDiff
from strata.errors import InvalidInputError, StrataError
from strata.image import gpg, gvariant
from strata.image.gvariant import Variant
from strata.image.objects import Commit, ObjectType
from strata.image.remote import get_remote, keyring_path
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot

LIVE_INPROGRESS_REF = "rpmostree/live-apply-inprogress"
AUTOMATIC_TIMER = "strata-automatic.timer"
# Commit metadata that status does not repeat: bulky, or promoted to a member of its own (rpm-ostree's list).
FILTERED_META = ("rpmostree.rpmdb.pkglist", "rpmostree.advisories", "rpmostree.packages", "rpmostree.modules",
                 "rpmostree.spec", "rpmostree.removed-base-packages", "rpmostree.replaced-base-packages",
                 "rpmostree.replaced-base-remote-packages")
INT_SIZES = {"n": 2, "q": 2, "i": 4, "u": 4, "h": 4, "x": 8, "t": 8}
PKG_TYPE_BASE = 0  # rpm-ostree's RPM_OSTREE_PKG_TYPE_BASE, the first member of a cached-update diff entry


def nevras(value: Any) -> list[Nevra]:
    result = []
    for item in value or []:
        inner = item.value if isinstance(item, Variant) else item
        nevra_tuple = inner[0].value if isinstance(inner, tuple) and isinstance(inner[0], Variant) else inner
        _text, name, epoch, version, release, arch = nevra_tuple
        result.append(Nevra(name, epoch, version, release, arch))
    return result


def _nevra_tuple(n: Nevra) -> list[Any]:
    return [n.nevra, n.name, n.epoch, n.version, n.release, n.arch]


def json_value(value: Any) -> Any:
    """Strata's decoding of a GVariant as JSON the way rpm-ostree serialises commit metadata (json-glib over
    the bytes as stored): integers read in the machine's order (ostree stores some big-endian on purpose, and
    rpm-ostree shows those swapped too), variants unwrapped, tuples as arrays, bytes as numbers, a{..} as
    objects."""
    if isinstance(value, Variant):
        return _typed_json(gvariant.parse_type(value.type), value.value)
    return value


def _typed_json(t: Any, value: Any) -> Any:
    if t.kind == "variant":
        return json_value(value)
    if t.kind == "basic" and t.code in INT_SIZES and isinstance(value, int) and not isinstance(value, bool):
        size = INT_SIZES[t.code]
        signed = t.code in "nix"
        return int.from_bytes(value.to_bytes(size, "big", signed=signed), sys.byteorder, signed=signed)
    if t.code == "d" and isinstance(value, float):
        return struct.unpack("=d", struct.pack(">d", value))[0]
    if t.kind == "maybe":
        return None if value is None else _typed_json(t.children[0], value)
    if t.kind == "array":
        elem = t.children[0]
        if isinstance(value, bytes | bytearray):
            return list(value)
        if elem.code.startswith("{"):
            return {str(_typed_json(elem.children[0], k)): _typed_json(elem.children[1], v) for k, v in value}
        return [_typed_json(elem, item) for item in value]
    if t.kind == "tuple":
        return [_typed_json(child, item) for child, item in zip(t.children, value, strict=False)]
    return value


def _meta_json(entries: list[tuple[str, Variant]]) -> dict[str, Any]:
    return {key: json_value(value) for key, value in entries}


def filtered_meta(commit: Commit) -> list[tuple[str, Variant]]:
    return [(key, value) for key, value in commit.metadata if key not in FILTERED_META]


def _signatures(sysroot: Sysroot, origin: Origin, checksum: str) -> tuple[bool | None, list[dict[str, Any]]]:
    """Whether the origin's remote verifies GPG signatures, and one entry per signature of the commit."""
    remote_name, sep, _ref = origin.refspec.partition(":")
    if not sep:
        return None, []
    try:
        remote = get_remote(sysroot.repo, remote_name)
    except StrataError:
        return None, []
    try:
        detached = sysroot.repo.read_detached_metadata(checksum)
        found = gpg.signatures(detached)
    except StrataError:  # damaged detached metadata: no signature status can show
        return remote.gpg_verify, []
    if not remote.gpg_verify or not found:
        return remote.gpg_verify, []
    try:
        data = sysroot.repo.read_metadata(checksum, ObjectType.COMMIT)
        gpg.verify(data, detached, keyring_path(sysroot.repo, remote_name), checksum)
        valid = True
    except StrataError:
        valid = False
    return True, [{"valid": valid} for _ in found]


def deployment_record(sysroot: Sysroot, dep: Deployment, booted: Deployment | None) -> dict[str, Any]:
    repo = sysroot.repo
    origin = Origin.from_keyfile(sysroot.read_origin(dep))
    commit = repo.load_commit(dep.csum)
    layered = bool(commit.meta("rpmostree.clientlayer", False))
    replaced = commit.meta("rpmostree.replaced-base-packages") or []
    data: dict[str, Any] = {
        "id": f"{dep.stateroot}-{dep.name}", "osname": dep.stateroot, "serial": dep.serial, "checksum": dep.csum,
        "booted": booted is not None and dep.key == booted.key, "staged": dep.staged,
        "pinned": sysroot.is_pinned(dep), "unlocked": sysroot.unlocked_state(dep), "origin": origin.refspec,
        "version": commit.version, "timestamp": commit.timestamp,
        "packages": list(commit.meta("rpmostree.packages") or []),
        "base-removals": [_nevra_tuple(n) for n in nevras(commit.meta("rpmostree.removed-base-packages"))],
        "base-local-replacements": [[_nevra_tuple(nevras([new])[0]), _nevra_tuple(nevras([old])[0])]
                                    for new, old in replaced],
        "base-remote-replacements": {},
        "requested-packages": list(origin.requested),
        "requested-local-packages": [e.nevra for e in origin.requested_local],
        "requested-local-fileoverride-packages": [e.nevra for e in origin.requested_local_fileoverride],
        "requested-base-removals": list(origin.override_remove),
        "requested-base-local-replacements": [e.nevra for e in origin.override_replace_local],
        "regenerate-initramfs": origin.regenerate_initramfs,
    }
    if origin.initramfs_args:
        data["initramfs-args"] = list(origin.initramfs_args)
    data["initramfs-etc"] = list(origin.initramfs_etc)  # rpm-ostree always has it, empty when nothing is tracked
    base = repo.load_commit(commit.parent) if layered and commit.parent else commit
    if layered and commit.parent:
        data.update({"base-checksum": commit.parent, "base-version": base.version,
                     "base-timestamp": base.timestamp,
                     "layered-commit-meta": _meta_json(filtered_meta(commit))})
    data["base-commit-meta"] = _meta_json(filtered_meta(base))
    endoflife = base.meta("ostree.endoflife")
    if isinstance(endoflife, str):
        data["endoflife"] = endoflife
    gpg_enabled, signatures = _signatures(sysroot, origin, commit.parent if layered and commit.parent else dep.csum)
    if gpg_enabled is not None:
        data["gpg-enabled"] = gpg_enabled
        data["signatures"] = signatures
    is_booted = data["booted"]
    inprogress = repo.read_ref(LIVE_INPROGRESS_REF) if is_booted else None
    if inprogress:
        data["live-inprogress"] = inprogress
    live = livefs.live_commit(sysroot, dep)
    if live:
        data["live-replaced"] = live
    return data


# ---------------------------------------------------------------- the cached update (automatic updates)


def _split_evr(evr: str) -> tuple[int, str, str]:
    epoch_text, colon, rest = evr.partition(":")
    epoch, rest = (int(epoch_text), rest) if colon and epoch_text.isdigit() else (0, evr)
    version, _dash, release = rest.rpartition("-")
    return epoch, version, release


def _item_nevra(triple: list[Any]) -> Nevra:
    name, evr, arch = (str(part) for part in triple)
    epoch, version, release = _split_evr(evr)
    return Nevra(name, epoch, version, release, arch)


def diff_from_items(items: Any) -> PackageDiff | None:
    """A package diff from the `[name, type, {PreviousPackage, NewPackage}]` items the cache stores."""
    if not isinstance(items, list):
        return None
    diff = PackageDiff()
    try:
        for _name, kind, details in items:
            if not isinstance(details, dict):
                return None
            old = _item_nevra(details["PreviousPackage"]) if "PreviousPackage" in details else None
            new = _item_nevra(details["NewPackage"]) if "NewPackage" in details else None
            if kind == 0 and new is not None:
                diff.added.append(new)
            elif kind == 1 and old is not None:
                diff.removed.append(old)
            elif kind in (2, 3) and old is not None and new is not None:
                (diff.upgraded if kind == 2 else diff.downgraded).append((old, new))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None  # a damaged cache is no update rather than a failing status
    return diff


def rpm_diff_json(diff: PackageDiff) -> dict[str, list[Any]]:
    """rpm-ostree's cached-update `rpm-diff`: changed packages as [type, name, [old-evr, old-arch], [new-evr,
    new-arch]], removed and added ones as [type, name, evr, arch]."""
    def changed(pairs: list[tuple[Nevra, Nevra]]) -> list[Any]:
        return [[PKG_TYPE_BASE, new.name, [old.evr, old.arch], [new.evr, new.arch]] for old, new in pairs]

    def single(packages: list[Nevra]) -> list[Any]:
        return [[PKG_TYPE_BASE, p.name, p.evr, p.arch] for p in packages]
    return {"upgraded": changed(diff.upgraded), "downgraded": changed(diff.downgraded),
            "removed": single(diff.removed), "added": single(diff.added)}


def cached_update_record(cached: dict[str, Any] | None) -> dict[str, Any] | None:
    """`status --json`'s cached-update member from what automatic `check` cached (None: no update)."""
    if not cached or not isinstance(cached.get("checksum"), str):
        return None
    record: dict[str, Any] = {key: cached[key] for key in ("osname", "checksum", "version", "timestamp", "origin",
                                           "ref-has-new-commit") if key in cached}
    diff = diff_from_items(cached.get("rpm-diff"))
    if diff is not None:
        record["rpm-diff"] = rpm_diff_json(diff)
    record["advisories"] = []
    return record


def automatic_updates_line(policy: str, timer_state: str, verbose: bool) -> str | None:
    """The `AutomaticUpdates:` header line: nothing for `none` unless verbose, else the policy and the timer."""
    if policy == "none":
        return "AutomaticUpdates: disabled" if verbose else None
    return f"AutomaticUpdates: {policy}; {timer_state}"


@dataclass(frozen=True)
class AvailableUpdate:
    version: str | None
    timestamp: int
    commit: str
    new_commit: bool
    diff: PackageDiff | None


def available_update(cached: dict[str, Any] | None) -> AvailableUpdate | None:
    if not cached or not isinstance(cached.get("checksum"), str):
        return None
    version = cached.get("version")
    timestamp = cached.get("timestamp")
    return AvailableUpdate(version if isinstance(version, str) else None,
                           timestamp if isinstance(timestamp, int) else 0, cached["checksum"],
                           bool(cached.get("ref-has-new-commit", True)), diff_from_items(cached.get("rpm-diff")))


def pending_exit_77(deployments: list[dict[str, Any]]) -> bool:
    """`status --pending-exit-77`: the first deployment is not the booted one (something is pending)."""
    return len(deployments) > 1 and not deployments[0].get("booted", False)


# ---------------------------------------------------------------- JSONPath (the subset people use)

_STEP = re.compile(r"\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*)|\[(?P<index>-?\d+|\*)\]|\['(?P<quoted>[^']*)'\]"
                   r"|\.(?P<star>\*)")


def jsonpath_query(expression: str, document: Any) -> list[Any]:
    """The values EXPRESSION selects, as JSON-GLib's json_path_query answers: always an array of matches.
    Understood: `$`, `.name`, `['name']`, `[N]` (negative from the end), `[*]` and `.*`; anything else
    (filters, slices, recursive descent) is refused."""
    if not expression.startswith("$"):
        raise InvalidInputError(f"While compiling jsonpath: '{expression}' does not start with '$'")
    position, matches = 1, [document]
    while position < len(expression):
        step = _STEP.match(expression, position)
        if step is None:
            raise InvalidInputError(f"While compiling jsonpath: unsupported expression at "
                                    f"'{expression[position:]}' (strata understands $, .name, ['name'], "
                                    f"[N], [*] and .*)")
        matches = [found for value in matches for found in _apply_step(step, value)]
        position = step.end()
    return matches


def _apply_step(step: re.Match[str], value: Any) -> list[Any]:
    key = step.group("name") or step.group("quoted")
    if key is not None:
        return [value[key]] if isinstance(value, dict) and key in value else []
    index = step.group("index")
    if index is None or index == "*":
        return list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, list) else []
    if isinstance(value, list) and -len(value) <= int(index) < len(value):
        return [value[int(index)]]
    return []
