"""The rpm-md repositories a client transaction or `search` uses: the deployment's /etc/yum.repos.d, with
`--enablerepo`/`--disablerepo`/`--releasever` applied for this one transaction, and `--cache-only` keeping
to the metadata already downloaded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strata.errors import InvalidInputError, StrataError
from strata.packages.rpmmd import RepoConfig, cache_path, load_metadata, parse_repo_files
from strata.packages.sources import RepositorySet, open_repositories

Log = Callable[[str], None]


@dataclass(frozen=True)
class RepoOptions:
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()  # repository ids, or "*" for every one
    releasever: str | None = None
    cache_only: bool = False

    @property
    def variables(self) -> dict[str, str] | None:
        return {"releasever": self.releasever} if self.releasever else None


def selected_ids(configs: list[RepoConfig], options: RepoOptions) -> list[str]:
    """The repositories to use: the enabled ones, minus --disablerepo, plus --enablerepo (in that order,
    as dnf applies them)."""
    known = {c.id for c in configs}
    for name in (*options.enable, *(d for d in options.disable if d != "*")):
        if name not in known:
            raise InvalidInputError(f"Unknown rpm-md repository: {name}")
    chosen = [c.id for c in configs if c.enabled]
    if "*" in options.disable:
        chosen = []
    chosen = [name for name in chosen if name not in options.disable]
    return chosen + [c.id for c in configs if c.id in options.enable and c.id not in chosen]


def open_repos(etc: Path, cachedir: Path, log: Log, options: RepoOptions) -> RepositorySet | None:
    """The repositories of a deployment's /etc; None when it has no yum.repos.d."""
    repos_dir = etc / "yum.repos.d"
    if not repos_dir.is_dir():
        return None
    configs = parse_repo_files(repos_dir, options.variables)
    wanted = selected_ids(configs, options)
    if not options.cache_only:
        return open_repositories(repos_dir, wanted, cachedir, log, options.variables)
    by_id = {c.id: c for c in configs}
    metadata = []
    for name in wanted:
        config = by_id[name]
        if not config.is_local:
            if not (cache_path(cachedir, name, "repository id") / "repomd.xml").exists():
                raise StrataError(f"rpm-md repo '{name}' has no cached metadata (--cache-only forbids downloading "
                                  "it; run `strata refresh-md` first)")
            config = dataclasses.replace(config, metadata_expire=-1)  # cached data counts as fresh, however old
        metadata.append(load_metadata(config, cachedir, log))
        log(f"rpm-md repo '{name}' (cached)")
    return RepositorySet(metadata)
