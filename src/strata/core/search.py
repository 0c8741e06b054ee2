"""`strata search TERM...` (rpm-ostree's): the packages of the enabled rpm-md repositories whose name and/or
summary contain every term, in rpm-ostree's three groups (both, name only, summary only); a package shows
up once, in the first group it matches."""

from __future__ import annotations

from dataclasses import dataclass, field

import solv

from strata.core.client import open_context
from strata.core.repos import RepoOptions, open_repos
from strata.core.transaction import Progress
from strata.errors import InvalidInputError, StrataError
from strata.sysroot.sysroot import Sysroot

GROUPS = ("Summary & Name", "Name", "Summary")


@dataclass
class SearchResult:
    groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # group -> [(name, summary)]

    @property
    def empty(self) -> bool:
        return not any(self.groups.values())


def search(sysroot: Sysroot, stateroot: str | None, terms: list[str], progress: Progress,
           repos: RepoOptions | None = None) -> SearchResult:
    if not terms:
        raise InvalidInputError("Must specify a term for search")
    ctx = open_context(sysroot, stateroot)
    etc = sysroot.deployment_dir(ctx.etc_merge) / "etc"
    sources = open_repos(etc, ctx.cachedir / "rpmmd", progress.message, repos or RepoOptions())
    if sources is None or not sources.metadata:
        raise StrataError("No enabled rpm-md repositories to search")
    packages = _name_summaries(sources.solver().pool)
    return group_matches(packages, terms)


def _name_summaries(pool: solv.Pool) -> dict[str, str]:
    found: dict[str, str] = {}
    for repo in pool.repos:
        for solvable in repo.solvables:
            found.setdefault(str(solvable.name), str(solvable.lookup_str(solv.SOLVABLE_SUMMARY) or ""))
    return found


def group_matches(packages: dict[str, str], terms: list[str]) -> SearchResult:
    lowered = [t.lower() for t in terms]
    result = SearchResult({group: [] for group in GROUPS})
    for name in sorted(packages):
        summary = packages[name]
        in_name = all(t in name.lower() for t in lowered)
        in_summary = all(t in summary.lower() for t in lowered)
        if in_name and in_summary:
            result.groups[GROUPS[0]].append((name, summary))
        elif in_name:
            result.groups[GROUPS[1]].append((name, summary))
        elif in_summary:
            result.groups[GROUPS[2]].append((name, summary))
    return result
