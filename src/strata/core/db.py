"""Package lists of commits, read from `rpmostree.rpmdb.pkglist` without checking trees out."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from strata.core.refs import base_commit
from strata.errors import NotFoundError, StrataError
from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.repo import Repo
from strata.packages import rpmdb
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Deployment, Sysroot


def commit_packages(repo: Repo, commit: str) -> list[Nevra]:
    entries = repo.load_commit(commit).meta("rpmostree.rpmdb.pkglist")
    if entries is None:
        raise StrataError(f"commit {commit} has no package list (rpmostree.rpmdb.pkglist)")
    return sorted(Nevra.from_pkglist_entry(tuple(e)) for e in entries)


def resolve_revisions_and_prefixes(repo: Repo, args: list[str]) -> tuple[list[str], list[str]]:
    """`db list REV... [PREFIX...]`: arguments up to the first that is not a revision are revisions."""
    revisions: list[str] = []
    for index, arg in enumerate(args):
        try:
            resolved = repo.resolve_rev(arg)
        except (NotFoundError, StrataError):
            if not revisions:
                raise
            return revisions, args[index:]
        assert resolved is not None
        revisions.append(resolved)
    return revisions, []


def packages_or_none(repo: Repo, commit: str) -> list[Nevra] | None:
    """The package list of a commit, or None for a plain OSTree commit that carries none."""
    if repo.load_commit(commit).meta("rpmostree.rpmdb.pkglist") is None:
        return None
    return commit_packages(repo, commit)


def rpmdb_version(repo: Repo, commit: str) -> str:
    """rpm-ostree's `db version`: the package count and the SHA-256 of the packages' E:N-V-R.A in name order."""
    digest = hashlib.sha256()
    packages = sorted(commit_packages(repo, commit), key=lambda p: p.name)
    for pkg in packages:
        prefix = f"{pkg.epoch}:" if pkg.epoch else ""
        digest.update(f"{prefix}{pkg.name}-{pkg.version}-{pkg.release}.{pkg.arch}".encode())
    return f"{len(packages)}:{digest.hexdigest()}"


def default_diff_pair(sysroot: Sysroot, one_rev: str | None, *, base: bool = False) -> tuple[str, str]:
    """`db diff` without both revisions: booted -> pending, else rollback -> booted; one revision: booted -> it.
    With base, the deployments' base commits rather than their layered commits."""
    booted = sysroot.booted()
    if booted is None:
        raise StrataError("db diff without revisions needs a booted sysroot")
    def commit(dep: Deployment) -> str:
        return base_commit(sysroot.repo, dep.csum) if base else dep.csum
    if one_rev is not None:
        return commit(booted), one_rev
    deps = [d for d in sysroot.deployments() if d.stateroot == booted.stateroot]
    index = next(i for i, d in enumerate(deps) if d.key == booted.key)
    if index > 0:
        return commit(booted), commit(deps[index - 1])
    if index + 1 < len(deps):
        return commit(deps[index + 1]), commit(booted)
    raise StrataError("No pending or rollback deployment to diff against")


@dataclass(frozen=True)
class ChangelogEntry:
    time: int
    author: str
    text: str


def new_changelogs(repo: Repo, old: str, new: str, upgraded: list[tuple[Nevra, Nevra]]
                   ) -> dict[str, list[ChangelogEntry]]:
    """For each upgraded package, the changelog entries of the new build newer than the old build's newest."""
    if not upgraded:
        return {}
    with tempfile.TemporaryDirectory(prefix="strata-changelog-", dir=repo.tmp_dir) as tmp:
        old_root = _rpmdb_checkout(repo, old, Path(tmp) / "old")
        new_root = _rpmdb_checkout(repo, new, Path(tmp) / "new")
        result = {}
        for before, after in upgraded:
            newest_old = max((e.time for e in _changelog(old_root, before.nevra)), default=0)
            result[after.name] = [e for e in _changelog(new_root, after.nevra) if e.time > newest_old]
    return result


_ENTRY_SEPARATOR = "\x1e"


def _changelog(root: Path, nevra: str) -> list[ChangelogEntry]:
    fmt = f"[%{{CHANGELOGTIME}}\x1f%{{CHANGELOGNAME}}\x1f%{{CHANGELOGTEXT}}{_ENTRY_SEPARATOR}]"
    entries = []
    for chunk in rpmdb.query(root, fmt, packages=[nevra]).split(_ENTRY_SEPARATOR):
        parts = chunk.split("\x1f")
        if len(parts) == 3 and parts[0].strip().isdigit():
            entries.append(ChangelogEntry(int(parts[0].strip()), parts[1], parts[2]))
    return entries


def _rpmdb_checkout(repo: Repo, commit: str, root: Path) -> Path:
    loaded = repo.load_commit(commit)
    (root / "usr" / "share").mkdir(parents=True, exist_ok=True)
    checkout_tree(repo, (loaded.root_tree, loaded.root_meta), root / "usr" / "share" / "rpm",
                  CheckoutOptions(subpath="usr/share/rpm", force_copy=True))
    return root
