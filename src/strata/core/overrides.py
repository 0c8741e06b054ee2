"""`override replace --experimental --from repo=NAME PKG...` and `--freeze`: base packages replaced by builds
from an rpm-md repository rather than by local RPM files. With --from the origin records the repository and
the names (`[overrides] replace=repo=NAME,PKG`) and every later deployment takes the repository's newest
build; with --freeze the builds found now are recorded as local replacements and stay as they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strata.core.client import Change, ChangeOptions, Context, Outcome, repos_for, run_verb
from strata.core.db import packages_or_none
from strata.core.origin import Origin, RemoteReplacement
from strata.core.refs import base_commit
from strata.core.repopkgs import fetch_as_local, newest_in_repo
from strata.core.repos import open_repos
from strata.core.transaction import Progress, Transaction
from strata.errors import InvalidInputError, StrataError
from strata.packages.nevra import Nevra
from strata.sysroot.sysroot import Sysroot


def parse_source(source: str | None) -> str | None:
    """`repo=NAME` -> NAME (rpm-ostree's only kind of override source)."""
    if source is None:
        return None
    kind, sep, name = source.partition("=")
    if not sep or kind != "repo" or not name:
        raise InvalidInputError(f"Invalid override source: '{source}' (expected repo=NAME)")
    return name


def replace_from_repo(sysroot: Sysroot, stateroot: str | None, packages: Sequence[str], source: str | None,
                      freeze: bool, progress: Progress, options: ChangeOptions | None = None) -> Outcome:
    repo_name = parse_source(source)
    if repo_name is None:
        raise InvalidInputError("--freeze needs --from repo=NAME (the repository to take the builds from)")
    args = [f"--from=repo={repo_name}", *(["--freeze"] if freeze else []), *packages]
    return run_verb(sysroot, stateroot, "override replace", args, progress,
                    _ReplaceFromRepo(repo_name, list(packages), freeze), options)


@dataclass
class _ReplaceFromRepo:
    repo_name: str
    names: list[str]
    freeze: bool

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        self._check_names(ctx, origin)
        etc = ctx.sysroot.deployment_dir(ctx.etc_merge) / "etc"
        wanted = RemoteReplacement(self.repo_name, tuple(self.names))
        sources = open_repos(etc, ctx.cachedir / "rpmmd", txn.log,
                             repos_for(origin.evolve(override_replace_remote=(wanted,)), ctx.options.repos))
        if sources is None:
            raise StrataError("No enabled rpm-md repositories to take replacement packages from")
        candidates = [newest_in_repo(sources, self.repo_name, name) for name in self.names]
        if not self.freeze:
            return Change(origin.evolve(override_replace_remote=(*origin.override_replace_remote, wanted)))
        frozen = [fetch_as_local(ctx.repo, sources, c, ctx.cachedir, txn.log) for c in candidates]
        return Change(origin.evolve(override_replace_local=(*origin.override_replace_local, *frozen)))

    def _check_names(self, ctx: Context, origin: Origin) -> None:
        base = packages_or_none(ctx.repo, base_commit(ctx.repo, ctx.merge.csum)) or []
        replaced = {Nevra.parse(e.nevra).name for e in origin.override_replace_local}
        replaced |= {name for entry in origin.override_replace_remote for name in entry.packages}
        for name in self.names:
            if not any(p.name == name for p in base):
                raise InvalidInputError(f'Package "{name}" not found in the base')
            if name in replaced or name in origin.override_remove:
                raise InvalidInputError(f"Override already exists for package '{name}'")
