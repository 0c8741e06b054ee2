"""The verbs that change the base commit: upgrade, deploy REVISION, rebase. They decide what to pull (file://
remotes locally, HTTP remotes through the pull engine, history walks as commit objects only) and which commit
of a ref's history is meant, then hand one change to the engine in `core.client`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from strata.core.client import (
    Change,
    ChangeOptions,
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
        pull(repo, remote, [ref], PullOptions(depth=depth, commit_metadata_only=history_only))
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


def local_ref(repo: Repo, refspec: str) -> str:
    """--cache-only: the commit the ref already names here, nothing fetched."""
    commit = repo.resolve_rev(refspec, allow_missing=True)
    if commit is None:
        raise NotFoundError(f"refspec {refspec} is not in the local repository (--cache-only forbids pulling it)")
    return commit


def fetch_ref(ctx: Context, refspec: str, progress: Progress) -> str:
    return local_ref(ctx.repo, refspec) if ctx.options.cache_only else pull_ref(ctx.repo, refspec, progress)


def find_in_history(repo: Repo, refspec: str, revision: str, progress: Progress, *, cache_only: bool = False) -> str:
    """rpm-ostree's REVISION: `revision=CHECKSUM`, `version=VERSION`, a full checksum, a version, or a
    checksum prefix of a commit in the ref's history."""
    if cache_only:
        head = local_ref(repo, refspec)
    else:
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
    if not cache_only:
        _fetch_full_commit(repo, refspec, found[0])
    return found[0]


def check_downgrade(repo: Repo, current: str, new: str) -> None:
    """ostree's rule: a base older than the current one is a downgrade, refused unless allowed."""
    old_ts, new_ts = repo.load_commit(current).timestamp, repo.load_commit(new).timestamp
    if new_ts > old_ts or new_ts == old_ts or current == new:
        return
    raise StrataError(f"Upgrade target revision '{new}' with timestamp '{_ctime(new_ts)}' is chronologically older "
                      f"than current revision '{current}' with timestamp '{_ctime(old_ts)}'; use "
                      "--allow-downgrade to permit")


def _ctime(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%a %b %e %H:%M:%S %Y")


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


def upgrade(sysroot: Sysroot, stateroot: str | None, progress: Progress,
            options: ChangeOptions | None = None) -> Outcome:
    """Upgrade to the newest commit of the origin ref; a base older than the current one is refused unless
    options.allow_downgrade (the default is rpm-ostree's upgrade rule: refused; see `upgrade_options`)."""
    options = options or upgrade_options()
    args = [] if not options.allow_downgrade else ["--allow-downgrade"]
    return run_verb(sysroot, stateroot, "upgrade", args, progress, _Upgrade(), options)


def upgrade_options(**values: object) -> ChangeOptions:
    """ChangeOptions as `upgrade` defaults them: downgrades refused."""
    values.setdefault("allow_downgrade", False)
    return ChangeOptions(**values)  # type: ignore[arg-type]


class _Upgrade:
    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if _is_pinned_to_commit(origin.refspec):
            raise PinnedError("Pinned to commit; no upgrade available")
        new_base = fetch_ref(ctx, origin.refspec, txn.progress)
        txn.checkpoint("after-pull")
        if not ctx.options.allow_downgrade:
            check_downgrade(ctx.repo, base_commit(ctx.repo, ctx.merge.csum), new_base)
        return Change(origin.evolve(override_commit=None), base=new_base)


# ---------------------------------------------------------------- deploy REVISION and rebase


def deploy_revision(sysroot: Sysroot, stateroot: str | None, revision: str, progress: Progress,
                    options: ChangeOptions | None = None) -> Outcome:
    """Deploy a version or commit of the origin ref (downgrades allowed unless options.allow_downgrade is
    False: `--disallow-downgrade`)."""
    return run_verb(sysroot, stateroot, "deploy", [revision], progress, _DeployRevision(revision), options)


def preview_revision(sysroot: Sysroot, stateroot: str | None, revision: str, progress: Progress,
                     options: ChangeOptions | None = None) -> AvailableUpdate | None:
    """`deploy --preview`: the commit REVISION names and its package diff against the current base, nothing
    deployed (None: it is the current base)."""
    from strata.core.client import open_context
    ctx = open_context(sysroot, stateroot, options)
    with Transaction(sysroot, "deploy", ["--preview", revision], progress, stateroot=ctx.stateroot, check=False):
        ctx = open_context(sysroot, stateroot, options)
        target = find_in_history(ctx.repo, ctx.origin().refspec, revision, progress,
                                 cache_only=ctx.options.cache_only)
        current = base_commit(ctx.repo, ctx.merge.csum)
        if target == current:
            return None
        commit = ctx.repo.load_commit(target)
        return AvailableUpdate(target, commit.version, commit.timestamp, package_diff(ctx.repo, current, target))


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
        target = find_in_history(ctx.repo, origin.refspec, wanted, txn.progress, cache_only=ctx.options.cache_only)
        txn.checkpoint("after-pull")
        if not ctx.options.allow_downgrade:
            check_downgrade(ctx.repo, base_commit(ctx.repo, ctx.merge.csum), target)
        return Change(origin.evolve(override_commit=target), base=target)


@dataclass(frozen=True)
class RebaseRequest:
    """rpm-ostree's rebase arguments: REFSPEC (or -b BRANCH / -m REMOTE, each keeping the other part of the
    current refspec), an optional REVISION, the custom origin to record, and whether the old ref stays."""

    refspec: str | None = None
    revision: str | None = None
    branch: str | None = None
    remote: str | None = None
    skip_purge: bool = False
    custom_url: str | None = None
    custom_description: str | None = None

    def target(self) -> str:
        if self.refspec is not None and (self.branch or self.remote):
            raise InvalidInputError("Cannot specify both a REFSPEC and --branch/--remote")
        if self.refspec is not None:
            return self.refspec
        if self.branch and self.remote:
            return f"{self.remote}:{self.branch}"
        if self.branch:
            return self.branch
        if self.remote:
            return f"{self.remote}:"
        raise InvalidInputError("Must specify refspec")

    def args(self) -> list[str]:
        words = [*([self.refspec] if self.refspec else []), *([self.revision] if self.revision else [])]
        words += [f"--branch={self.branch}"] if self.branch else []
        words += [f"--remote={self.remote}"] if self.remote else []
        words += ["--skip-purge"] if self.skip_purge else []
        words += [f"--custom-origin-url={self.custom_url}"] if self.custom_url else []
        return words


def rebase(sysroot: Sysroot, stateroot: str | None, refspec: str | RebaseRequest, revision: str | None,
           progress: Progress, options: ChangeOptions | None = None) -> Outcome:
    request = refspec if isinstance(refspec, RebaseRequest) else RebaseRequest(refspec, revision)
    if request.custom_description and not request.custom_url:
        raise InvalidInputError("--custom-origin-description requires --custom-origin-url")
    rebaser = _Rebase(request)
    outcome = run_verb(sysroot, stateroot, "rebase", request.args(), progress, rebaser, options)
    if outcome.changed and not request.skip_purge and rebaser.old_refspec not in (None, rebaser.new_refspec):
        _purge_ref(sysroot, rebaser.old_refspec)
    return outcome


def _purge_ref(sysroot: Sysroot, refspec: str | None) -> None:
    """rpm-ostree drops the ref rebased away from (the commits stay while deployments need them)."""
    if refspec is None or _is_pinned_to_commit(refspec):
        return
    remote, _, ref = refspec.rpartition(":")
    if not remote and ref.startswith("local/"):
        return  # a tree `compose local` hosts stays listed (and servable) after rebasing away from it
    with sysroot.lock():
        if sysroot.repo.read_ref(ref, remote or None) is not None:
            sysroot.repo.set_ref(ref, None, remote or None)


@dataclass
class _Rebase:
    request: RebaseRequest
    old_refspec: str | None = None
    new_refspec: str | None = None

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        refspec = self._full_refspec(self.request.target(), origin.refspec)
        revision = self.request.revision
        if refspec == origin.refspec and not revision:
            raise InvalidInputError(f"Old and new refs are equal: {refspec}")
        self.old_refspec, self.new_refspec = origin.refspec, refspec
        repo = ctx.repo
        if revision:
            base = find_in_history(repo, refspec, revision, txn.progress, cache_only=ctx.options.cache_only)
        else:
            base = fetch_ref(ctx, refspec, txn.progress)
        txn.checkpoint("after-pull")
        if not ctx.options.allow_downgrade:
            check_downgrade(repo, base_commit(repo, ctx.merge.csum), base)
        new = origin.evolve(refspec=refspec, override_commit=base if revision else None,
                            custom_url=self.request.custom_url,
                            custom_description=self.request.custom_description)
        return Change(new, base=base)

    @staticmethod
    def _full_refspec(wanted: str, current: str) -> str:
        refspec = wanted.removeprefix("ostree://")
        if not refspec:
            raise InvalidInputError("Refspec is empty")
        old_remote = current.rpartition(":")[0]
        if ":" not in refspec and old_remote:
            return f"{old_remote}:{refspec}"
        if refspec.endswith(":"):
            return refspec + current.rpartition(":")[2]
        return refspec
