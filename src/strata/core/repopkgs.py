"""Single packages taken from a named rpm-md repository, for replacement overrides (`override replace --from
repo=NAME`): the newest build of a name in that repository, fetched into the package cache once and then
named the way the origin names local RPMs (header digest and NEVRA)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import solv

from strata.core.origin import LocalPackage, Origin
from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.image.repo import Repo
from strata.packages import pkgcache
from strata.packages.importer import ImportOptions, import_package
from strata.packages.nevra import Nevra
from strata.packages.rpmread import RpmPackage
from strata.packages.solver import Candidate
from strata.packages.sources import RepositorySet
from strata.packages.text import shown

Log = Callable[[str], None]
_CHECKSUM_TYPES = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512"})


def newest_in_repo(sources: RepositorySet, repo_id: str, name: str) -> Candidate:
    if repo_id not in {m.config.id for m in sources.metadata}:
        raise NotFoundError(f"rpm-md repo '{repo_id}' is not enabled")
    solver = sources.solver()  # held while its solvables are read: they live in its pool
    found: list[Any] = [s for s in solver.providers(name) if s.repo.name == repo_id and s.name == name]
    if not found:
        raise NotFoundError(f"No matches for '{shown(name)}' in repo '{shown(repo_id)}'")
    newest = max(found, key=functools.cmp_to_key(_evrcmp))
    candidate = _candidate(newest)
    del solver
    return candidate


def _evrcmp(a: Any, b: Any) -> int:
    return int(a.evrcmp(b))


def _candidate(solvable: Any) -> Candidate:
    location, _media = solvable.lookup_location()
    checksum = solvable.lookup_checksum(solv.SOLVABLE_CHECKSUM)
    if checksum is None or not location:
        raise CorruptionError(f"package {shown(str(solvable))} has no location or checksum in its repository")
    algo = checksum.typestr().lower()
    if algo not in _CHECKSUM_TYPES:
        raise CorruptionError(f"package {shown(str(solvable))}: unsupported checksum type {shown(algo)}")
    epoch_text, _, evr = str(solvable.evr).rpartition(":")
    version, _, release = evr.rpartition("-")
    nevra = Nevra(str(solvable.name), int(epoch_text) if epoch_text.isdigit() else 0, version, release,
                  str(solvable.arch))
    size = solvable.lookup_num(solv.SOLVABLE_DOWNLOADSIZE) or 0
    return Candidate(nevra, str(solvable.repo.name), location, (algo, checksum.hex()), int(size))


def fetch_as_local(repo: Repo, sources: RepositorySet, candidate: Candidate, cachedir: Path, log: Log
                   ) -> LocalPackage:
    """The candidate in the package cache (downloaded and verified once), named as a local RPM."""
    commit = pkgcache.cached_commit(repo, candidate.nevra, candidate.checksum_text, nodocs=False)
    if commit is None:
        downloads = cachedir / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        path = sources.download([candidate], downloads, log)[candidate.nevra.nevra]
        try:
            options = ImportOptions(repodata_checksum=candidate.checksum_text, repo_id=candidate.repo_id,
                                    repo_timestamp=sources.repo_timestamps().get(candidate.repo_id))
            with repo.lock():
                commit = import_package(repo, RpmPackage.open(path), options)
        finally:
            path.unlink(missing_ok=True)
    digest = repo.load_commit(commit).meta("rpmostree.metadata_sha256")
    if not isinstance(digest, str):
        raise StrataError(f"package cache entry of {candidate.nevra.nevra} has no header digest")
    return LocalPackage(digest, candidate.nevra.nevra)


def resolve_remote_replacements(repo: Repo, origin: Origin, sources: RepositorySet | None, cachedir: Path,
                                log: Log) -> Origin:
    """The origin the layer is built from: each `replace=repo=NAME,...` entry turned into the local
    replacements of the builds the repository has now (the deployment's origin keeps the entry itself)."""
    if not origin.override_replace_remote:
        return origin
    if sources is None:
        raise StrataError("No enabled rpm-md repositories to take replacement packages from")
    local = list(origin.override_replace_local)
    for entry in origin.override_replace_remote:
        for name in entry.packages:
            local.append(fetch_as_local(repo, sources, newest_in_repo(sources, entry.repo, name), cachedir, log))
    return origin.evolve(override_replace_local=tuple(local), override_replace_remote=())
