"""What `status` reports about a deployment, as data: the members of rpm-ostree's deployment dictionary, shared
by `status --json`, the daemon's Deployments property and the benchmarks."""

from __future__ import annotations

from typing import Any

from strata.core import livefs
from strata.core.origin import Origin
from strata.image.gvariant import Variant
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot


def nevras(value: Any) -> list[Nevra]:
    result = []
    for item in value or []:
        inner = item.value if isinstance(item, Variant) else item
        nevra_tuple = inner[0].value if isinstance(inner, tuple) and isinstance(inner[0], Variant) else inner
        _text, name, epoch, version, release, arch = nevra_tuple
        result.append(Nevra(name, epoch, version, release, arch))
    return result


def deployment_record(sysroot: Sysroot, dep: Deployment, booted: Deployment | None) -> dict[str, Any]:
    repo = sysroot.repo
    origin = Origin.from_keyfile(sysroot.read_origin(dep))
    commit = repo.load_commit(dep.csum)
    layered = bool(commit.meta("rpmostree.clientlayer", False))
    data: dict[str, Any] = {
        "id": f"{dep.stateroot}-{dep.name}", "osname": dep.stateroot, "serial": dep.serial, "checksum": dep.csum,
        "booted": booted is not None and dep.key == booted.key, "staged": dep.staged,
        "pinned": sysroot.is_pinned(dep), "unlocked": "none", "origin": origin.refspec,
        "version": commit.version, "timestamp": commit.timestamp,
        "packages": list(commit.meta("rpmostree.packages") or []),
        "base-removals": [[n.nevra, n.name, n.epoch, n.version, n.release, n.arch]
                          for n in nevras(commit.meta("rpmostree.removed-base-packages"))],
        "base-local-replacements": [],
        "requested-packages": list(origin.requested),
        "requested-local-packages": [e.nevra for e in origin.requested_local],
        "requested-base-removals": list(origin.override_remove),
        "requested-base-local-replacements": [e.nevra for e in origin.override_replace_local],
        "regenerate-initramfs": origin.regenerate_initramfs,
    }
    if layered and commit.parent:
        base = repo.load_commit(commit.parent)
        data.update({"base-checksum": commit.parent, "base-version": base.version, "base-timestamp": base.timestamp})
    live = livefs.live_commit(sysroot, dep)
    if live:
        data["live-replaced"] = live
    return data
