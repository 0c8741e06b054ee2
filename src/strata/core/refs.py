"""The refs that keep what deployments need alive through every prune: `rpmostree/base/N` for the base
commits of layered deployments (ostree's own `ostree/B/S/N` refs hold the deployment commits)."""

from __future__ import annotations

from collections.abc import Iterable

from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.sysroot.sysroot import Sysroot

BASE_REF_PREFIX = "rpmostree/base"


def base_commit(repo: Repo, commit: str) -> str:
    """The base of a deployment's commit: its parent when the commit is a client layer."""
    loaded = repo.load_commit(commit)
    if loaded.meta("rpmostree.clientlayer", False) and loaded.parent:
        return loaded.parent
    return commit


def is_layered(repo: Repo, commit: str) -> bool:
    return bool(repo.load_commit(commit).meta("rpmostree.clientlayer", False))


def layered_bases(sysroot: Sysroot) -> list[str]:
    """The base commits of the layered deployments, in deployment order, without repeats."""
    repo = sysroot.repo
    bases: list[str] = []
    for dep in sysroot.deployments():
        if repo.has_object(dep.csum, ObjectType.COMMIT) and is_layered(repo, dep.csum):
            base = base_commit(repo, dep.csum)
            if base not in bases:
                bases.append(base)
    return bases


def sync_base_refs(sysroot: Sysroot, extra: Iterable[str] = ()) -> None:
    """Point rpmostree/base/0..N at the layered deployments' bases (plus `extra`, a base about to be deployed)
    and drop the refs beyond them. Written before any prune that could otherwise take a base away."""
    repo = sysroot.repo
    wanted = layered_bases(sysroot)
    wanted += [c for c in extra if c not in wanted]
    for index, commit in enumerate(wanted):
        name = f"{BASE_REF_PREFIX}/{index}"
        if repo.read_ref(name) != commit:
            repo.set_ref(name, commit)
    for name in repo.list_refs(BASE_REF_PREFIX, remotes=False):
        suffix = name.removeprefix(BASE_REF_PREFIX + "/")
        if not suffix.isdigit() or int(suffix) >= len(wanted):
            repo.set_ref(name, None)
