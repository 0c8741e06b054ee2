"""The verbs that change the base commit: upgrade, deploy REVISION, rebase. They decide what to pull (file://
remotes locally, HTTP remotes through the pull engine, history walks as commit objects only) and which commit
of a ref's history is meant, then hand one change to the engine in `core.client`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from strata.core.client import (
    Change,
    Context,
    Outcome,
    package_diff,
    run_verb,
)
from strata.core.pkgdiff import PackageDiff
from strata.core.refs import base_commit
from strata.core.transaction import Progress, Transaction
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.repo import Repo
from strata.image.traverse import history
from strata.sysroot.sysroot import Sysroot

HISTORY_DEPTH = 1000
_HEX_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")


def _url(repo: Repo, refspec: str) -> tuple[str, str | None]:
    remote = refspec.rpartition(":")[0]
    return remote, repo.config.get(f'remote "{remote}"', "url") if remote else None


def pull_ref(repo: Repo, refspec: str, progress: Progress, *, depth: int = 0, history_only: bool = False) -> str:
    """Fetch refspec's newest commit into the sysroot repo; returns it."""
    remote, url = _url(repo, refspec)
    ref = refspec.rpartition(":")[2]
    if url and url.startswith(("file://", "/")):
        from strata.image.transfer import pull_local
        pull_local(Repo.open(Path(url.removeprefix("file://"))), repo, [ref], remote=remote, depth=depth)
    elif url and url.startswith(("http://", "https://")):
        from strata.image.pull import PullOptions, pull
        progress.message("Receiving objects...")
        stats = pull(repo, remote, [ref], PullOptions(depth=depth, commit_metadata_only=history_only))
        progress.download(stats.fetched_objects, stats.fetched_bytes)
    commit = repo.resolve_rev(refspec, allow_missing=True)
    if commit is None:
        raise NotFoundError(f"refspec {refspec} not found")
    return commit


def _fetch_full_commit(repo: Repo, refspec: str, commit: str) -> None:
    """After a history walk over HTTP fetched commit objects only, fetch the chosen commit's tree."""
    remote, url = _url(repo, refspec)
    if url and url.startswith(("http://", "https://")):
        from strata.image.pull import pull
        pull(repo, remote, [commit])


def find_in_history(repo: Repo, refspec: str, revision: str, progress: Progress) -> str:
    """rpm-ostree's REVISION: `revision=CHECKSUM`, `version=VERSION`, a full checksum, a version, or a
    checksum prefix of a commit in the ref's history."""
    head = pull_ref(repo, refspec, progress, depth=HISTORY_DEPTH, history_only=True)
    commits = list(history(repo, head))
    wanted = revision.removeprefix("revision=").removeprefix("version=")
    if revision.startswith("revision=") or len(wanted) == 64:
        found = [c for c in commits if c == wanted]
        kind = "Checksum"
    elif revision.startswith("version="):
        found = [c for c in commits if repo.load_commit(c).version == wanted]
        kind = "Version"
    else:
        found = [c for c in commits if repo.load_commit(c).version == wanted]
        if not found and _HEX_PREFIX.match(wanted):
            found = [c for c in commits if c.startswith(wanted)]
            if len(found) > 1:
                raise InvalidInputError(f"Checksum prefix {wanted} is ambiguous in {refspec}")
        kind = "Version"
    if not found:
        raise NotFoundError(f"{kind} {wanted} not found in {refspec}")
    _fetch_full_commit(repo, refspec, found[0])
    return found[0]


def _is_pinned_to_commit(refspec: str) -> bool:
    return ":" not in refspec and len(refspec) == 64


# ---------------------------------------------------------------- upgrade


@dataclass
class AvailableUpdate:
    commit: str
    version: str | None
    timestamp: int
    diff: PackageDiff | None


def check_upgrade(sysroot: Sysroot, stateroot: str | None, progress: Progress) -> AvailableUpdate | None:
    """`upgrade --check/--preview`: pull the ref and say what an upgrade would bring (None: nothing)."""
    from strata.core.client import open_context
    ctx = open_context(sysroot, stateroot)
    with Transaction(sysroot, "upgrade", ["--check"], progress, stateroot=ctx.stateroot, check=False):
        ctx = open_context(sysroot, stateroot)
        origin = ctx.origin()
        if _is_pinned_to_commit(origin.refspec):
            return None
        new_base = pull_ref(ctx.repo, origin.refspec, progress)
        current = base_commit(ctx.repo, ctx.merge.csum)
        if new_base == current:
            return None
        commit = ctx.repo.load_commit(new_base)
        return AvailableUpdate(new_base, commit.version, commit.timestamp, package_diff(ctx.repo, current, new_base))


def download_update(sysroot: Sysroot, stateroot: str | None, progress: Progress) -> None:
    from strata.core.client import open_context
    ctx = open_context(sysroot, stateroot)
    with Transaction(sysroot, "upgrade", ["--download-only"], progress, stateroot=ctx.stateroot, check=False):
        origin = open_context(sysroot, stateroot).origin()
        if not _is_pinned_to_commit(origin.refspec):
            pull_ref(ctx.repo, origin.refspec, progress)


class PinnedError(StrataError):
    """The origin names a commit, not a ref: there is nothing to upgrade to."""


def upgrade(sysroot: Sysroot, stateroot: str | None, progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "upgrade", [], progress, _Upgrade())


class _Upgrade:
    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if _is_pinned_to_commit(origin.refspec):
            raise PinnedError("Pinned to commit; no upgrade available")
        new_base = pull_ref(ctx.repo, origin.refspec, txn.progress)
        txn.checkpoint("after-pull")
        return Change(origin.evolve(override_commit=None), base=new_base)


# ---------------------------------------------------------------- deploy REVISION and rebase


def deploy_revision(sysroot: Sysroot, stateroot: str | None, revision: str, progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "deploy", [revision], progress, _DeployRevision(revision))


@dataclass
class _DeployRevision:
    revision: str

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        wanted = self.revision
        is_checksum = len(wanted) == 64 or wanted.startswith("revision=")
        if _is_pinned_to_commit(origin.refspec) and not is_checksum:
            raise StrataError("Cannot look up version while pinned to commit")
        if not is_checksum:
            txn.log(f"Resolving version '{wanted.removeprefix('version=')}'")
        target = find_in_history(ctx.repo, origin.refspec, wanted, txn.progress)
        txn.checkpoint("after-pull")
        return Change(origin.evolve(override_commit=target), base=target)


def rebase(sysroot: Sysroot, stateroot: str | None, refspec: str, revision: str | None,
           progress: Progress) -> Outcome:
    args = [refspec, *([revision] if revision else [])]
    return run_verb(sysroot, stateroot, "rebase", args, progress, _Rebase(refspec, revision))


@dataclass
class _Rebase:
    refspec: str
    revision: str | None

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        refspec = self._full_refspec(origin.refspec)
        if refspec == origin.refspec and not self.revision:
            raise InvalidInputError(f"Old and new refs are equal: {refspec}")
        repo = ctx.repo
        if self.revision:
            base = find_in_history(repo, refspec, self.revision, txn.progress)
        else:
            base = pull_ref(repo, refspec, txn.progress)
        txn.checkpoint("after-pull")
        return Change(origin.evolve(refspec=refspec, override_commit=base if self.revision else None), base=base)

    def _full_refspec(self, current: str) -> str:
        refspec = self.refspec.removeprefix("ostree://")
        if not refspec:
            raise InvalidInputError("Refspec is empty")
        old_remote = current.rpartition(":")[0]
        if ":" not in refspec and old_remote:
            return f"{old_remote}:{refspec}"
        if refspec.endswith(":"):
            return refspec + current.rpartition(":")[2]
        return refspec
