"""Package lists of commits, read from `rpmostree.rpmdb.pkglist` without checking trees out."""

from __future__ import annotations

from strata.errors import NotFoundError, StrataError
from strata.image.repo import Repo
from strata.packages.nevra import Nevra


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
