"""The set of enabled rpm-md repositories of a treefile or a deployment, ready to solve and download from."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from strata import progress
from strata.errors import StrataError
from strata.packages.rpmmd import (
    RepoMetadata,
    download_package,
    fetch_keys,
    load_metadata,
    parse_repo_files,
    select_repos,
)
from strata.packages.signatures import PackageKeyring
from strata.packages.solver import Candidate, InstalledPackage, Restrictions, Solution, Solver

Log = Callable[[str], None]


@dataclass
class RepositorySet:
    metadata: list[RepoMetadata]

    def solver(self, installed: Iterable[InstalledPackage] | None = None) -> Solver:
        solver = Solver(self.metadata)
        if installed is not None:
            solver.set_installed(installed)
        return solver

    def solve(self, requests: list[str], *, exclude: list[str] = (), recommends: bool = True,  # type: ignore[assignment]
              restrictions: Restrictions | None = None) -> list[Candidate]:
        solution: Solution = self.solver().resolve(requests, exclude=exclude, recommends=recommends,
                                                   restrictions=restrictions)
        return solution.install

    def download(self, packages: list[Candidate], dest: Path, log: Log) -> dict[str, Path]:
        """Fetch packages into dest, each verified against its repodata checksum and, for repositories with
        gpgcheck=1, its signature against the repository's keys."""
        by_repo = {m.config.id: m.config for m in self.metadata}
        paths: dict[str, Path] = {}
        for repo_id in sorted({p.repo_id for p in packages}):
            config = by_repo[repo_id]
            wanted = [p for p in packages if p.repo_id == repo_id]
            with tempfile.TemporaryDirectory(prefix="strata-keys-") as tmp, \
                    progress.items(f"Downloading from '{repo_id}'", len(wanted)) as bar:
                keyring = PackageKeyring(repo_id, fetch_keys(config, Path(tmp)), Path(tmp)) if config.gpgcheck else None
                for pkg in wanted:
                    path = download_package(config, pkg.location, pkg.checksum, dest, pkg.size or None)
                    if keyring is not None:
                        _verify_or_discard(keyring, path, pkg.nevra.nevra)
                    paths[pkg.nevra.nevra] = path
                    bar.advance(nbytes=path.stat().st_size)
        return paths

    def repo_timestamps(self) -> dict[str, int]:
        return {m.config.id: m.timestamp for m in self.metadata}


def _verify_or_discard(keyring: PackageKeyring, path: Path, name: str) -> None:
    try:
        keyring.verify(path, name)
    except StrataError:
        path.unlink(missing_ok=True)
        raise


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_repositories(directory: Path, wanted: list[str] | None, cachedir: Path, log: Log,
                      variables: dict[str, str] | None = None, *, force: bool = False,
                      extra: list[str] | None = None, cache_only: bool = False) -> RepositorySet:
    """The wanted repositories (every enabled one for None) plus the extra ones, enabled or not."""
    found = parse_repo_files(directory, variables)
    configs = select_repos(found, wanted)
    configs += [c for c in select_repos(found, extra or []) if c not in configs]
    if not configs:
        log("No enabled rpm-md repositories.")
        return RepositorySet([])
    log(f"Enabled rpm-md repositories: {' '.join(c.id for c in configs)}")
    metadata = []
    for config in configs:
        meta = load_metadata(config, cachedir, log, force=force, cache_only=cache_only)
        count = _count_packages(meta)
        if meta.cached:
            log(f"rpm-md repo '{config.id}' (cached); generated: {_iso(meta.timestamp)} solvables: {count}")
        else:
            log(f"Updating metadata for '{config.id}'... done")
            log(f"rpm-md repo '{config.id}'; generated: {_iso(meta.timestamp)} solvables: {count}")
        metadata.append(meta)
    log("Importing rpm-md... done")
    return RepositorySet(metadata)


def _count_packages(meta: RepoMetadata) -> int:
    import gzip
    import re
    path = meta.files["primary"]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        head = f.read(4096)
    match = re.search(rb'packages="(\d+)"', head)
    return int(match.group(1)) if match else 0
