"""Client transactions (rpm-ostree's verbs, spec D, E.5, I): each verb turns its arguments into one change of
the origin (and of the kernel arguments), then the engine runs the same phases for every verb:

    resolve + pull -> plan -> assemble -> deploy (staged on a booted host) -> prune -> keep refs

inside a `Transaction` (lock, busy record, cancellation, invariants). Every change starts from the merge
deployment: the stateroot's pending deployment when there is one (staged or not), else the booted one,
else the stateroot's first; /etc comes from the booted deployment for the booted stateroot."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from strata.core import livefs
from strata.core.closure import check_closure
from strata.core.db import packages_or_none
from strata.core.layering import (
    LayerPlan,
    build_layered_commit,
    import_local_rpm,
    open_deployment_repos,
    plan_layer,
    read_base,
    state_digest,
)
from strata.core.origin import LocalPackage, Origin
from strata.core.pkgdiff import PackageDiff, diff_packages
from strata.core.refs import base_commit, is_layered, sync_base_refs
from strata.core.transaction import Progress, Transaction
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.keyfile import KeyFile
from strata.image.repo import Repo
from strata.packages.nevra import Nevra
from strata.sysroot import deploy as ops
from strata.sysroot.deploy import DeployOptions, KargEdits
from strata.sysroot.sysroot import Deployment, Sysroot


@dataclass
class Context:
    sysroot: Sysroot
    stateroot: str
    booted: Deployment | None
    merge: Deployment  # where the origin and kargs come from: pending, else booted, else the first
    etc_merge: Deployment  # where /etc comes from: the booted one for the booted stateroot

    @property
    def repo(self) -> Repo:
        return self.sysroot.repo

    def origin(self) -> Origin:
        return Origin.from_keyfile(self.sysroot.read_origin(self.merge))

    @property
    def is_guest(self) -> bool:
        return self.booted is not None and self.booted.stateroot != self.stateroot

    @property
    def cachedir(self) -> Path:
        return self.repo.path / "extensions" / "strata" / "cache"

    @property
    def reference(self) -> Deployment:
        """What a change is shown against: the booted deployment on the host, the merge one for a guest."""
        return self.booted if self.booted is not None and not self.is_guest else self.merge


def open_context(sysroot: Sysroot, stateroot: str | None) -> Context:
    booted = sysroot.booted()
    deps = sysroot.deployments()
    name = stateroot or (booted.stateroot if booted else (deps[0].stateroot if deps else None))
    if name is None:
        raise StrataError("No deployments found (deploy one with `strata admin deploy` first)")
    if stateroot and stateroot not in sysroot.stateroots():
        raise NotFoundError(f'OS name "{stateroot}" not found')
    mine = [d for d in deps if d.stateroot == name]
    if not mine:
        raise StrataError(f"No previous deployment for OS '{name}'")
    # Deployments are listed staged first, then in boot order: the stateroot's first is its pending one
    # when it has one, else the booted one (or, for a stateroot not booted, the one it would boot).
    merge = mine[0]
    etc_merge = booted if booted is not None and booted.stateroot == name else merge
    return Context(sysroot, name, booted, merge, etc_merge)


@dataclass(frozen=True)
class Change:
    """What a verb asks for: the new origin, a new base commit (None: keep the current base), kernel
    argument edits, and whether to deploy even when nothing differs."""

    origin: Origin
    base: str | None = None
    kargs: KargEdits | None = None
    force_new: bool = False


@dataclass
class Outcome:
    deployment: Deployment | None  # None: nothing changed
    commit: str | None = None
    diff: PackageDiff | None = None  # reference -> new deployment; None without package lists
    guest: bool = False  # the change went to a stateroot that is not the booted one
    staged: bool = False

    @property
    def changed(self) -> bool:
        return self.deployment is not None


# ---------------------------------------------------------------- the phases every change goes through


def apply_change(txn: Transaction, ctx: Context, change: Change) -> Outcome:
    repo = ctx.repo
    base = change.base or base_commit(repo, ctx.merge.csum)
    txn.checkpoint("before-assemble")
    target = _target_commit(txn, ctx, change.origin, base)
    txn.checkpoint("after-assemble")
    new_kargs = change.kargs.apply(ctx.merge.kargs) if change.kargs is not None else ctx.merge.kargs
    unchanged = target == ctx.merge.csum and change.origin == ctx.origin() and new_kargs == ctx.merge.kargs
    if unchanged and not change.force_new:
        return Outcome(None, target, guest=ctx.is_guest)
    stage = ctx.booted is not None and not ctx.is_guest
    options = DeployOptions(ctx.stateroot, _origin_keyfile(change.origin), change.kargs or KargEdits(), stage=stage,
                            not_as_default=ctx.is_guest, merge=ctx.merge, etc_merge=ctx.etc_merge)
    # The new base is held by a ref before the deployment's own cleanup prunes the repository.
    sync_base_refs(ctx.sysroot, [base] if is_layered(repo, target) else [])
    with txn.critical():
        dep = ops.deploy(ctx.sysroot, target, options, txn.log)
        txn.checkpoint("after-deploy")
        sync_base_refs(ctx.sysroot)
    return Outcome(dep, target, package_diff(repo, ctx.reference.csum, target), guest=ctx.is_guest, staged=stage)


def _origin_keyfile(origin: Origin) -> KeyFile:
    return origin.evolve(pinned=False).to_keyfile()


def _target_commit(txn: Transaction, ctx: Context, origin: Origin, base: str) -> str:
    if not origin.needs_local_assembly:
        return base
    repo = ctx.repo
    log = txn.log
    log(f"Checking out tree {base[:7]}... done")
    with tempfile.TemporaryDirectory(prefix="strata-base-", dir=repo.tmp_dir) as tmp:
        info = read_base(repo, base, Path(tmp))
    etc = ctx.sysroot.deployment_dir(ctx.etc_merge) / "etc"
    sources = open_deployment_repos(etc, ctx.cachedir / "rpmmd", log) if origin.requested else None
    txn.checkpoint("after-resolve")
    plan = plan_layer(repo, origin, info, sources, log)
    reuse = _reusable_layer(ctx, base, origin, plan)
    if reuse is not None:
        return reuse
    commit = build_layered_commit(repo, info, origin, plan, sources, etc, ctx.cachedir, log)
    if plan.removals or plan.replacements or plan.local:
        check_closure(repo, base, commit)
    return commit


def _reusable_layer(ctx: Context, base: str, origin: Origin, plan: LayerPlan) -> str | None:
    """The current layered commit, when it was built from the same base and the same state digest."""
    current = ctx.merge.csum
    repo = ctx.repo
    if not is_layered(repo, current) or base_commit(repo, current) != base:
        return None
    if repo.load_commit(current).meta("rpmostree.state-sha512") == state_digest(origin, plan):
        return current
    return None


def package_diff(repo: Repo, old: str, new: str) -> PackageDiff | None:
    before, after = packages_or_none(repo, old), packages_or_none(repo, new)
    if before is None or after is None:
        return None
    return diff_packages(before, after)


# A verb's own step inside the transaction: from the context to the change (None: nothing to do).
ChangeBuilder = Callable[[Transaction, Context], Change | None]


def run_verb(sysroot: Sysroot, stateroot: str | None, verb: str, args: Sequence[str], progress: Progress,
             build: ChangeBuilder) -> Outcome:
    """One transaction: open the context under the lock, let the verb build its change, apply it."""
    ctx = open_context(sysroot, stateroot)
    with Transaction(sysroot, verb, args, progress, stateroot=ctx.stateroot) as txn:
        ctx = open_context(sysroot, stateroot)
        change = build(txn, ctx)
        if change is None:
            return Outcome(None, guest=ctx.is_guest)
        return apply_change(txn, ctx, change)


# ---------------------------------------------------------------- package layering


@dataclass
class InstallOptions:
    idempotent: bool = False
    allow_inactive: bool = False


def install(sysroot: Sysroot, stateroot: str | None, specs: Sequence[str], options: InstallOptions,
            progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "install", specs, progress, InstallChange(list(specs), options))


def _is_local(spec: str) -> bool:
    return spec.endswith(".rpm") or spec.startswith("file://")


@dataclass
class InstallChange:
    specs: list[str]
    options: InstallOptions

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        requested = list(origin.requested)
        local = list(origin.requested_local)
        base = base_commit(ctx.repo, ctx.merge.csum)
        base_pkgs = packages_or_none(ctx.repo, base) or []
        for spec in self.specs:
            if _is_local(spec):
                local.append(_local_request(ctx, spec, local, base_pkgs))
                continue
            if spec in requested:
                if self.options.idempotent:
                    continue
                raise InvalidInputError(f"Package/capability '{spec}' is already requested")
            if not self.options.allow_inactive:
                _refuse_provided_by_base(ctx, base, spec)
            requested.append(spec)
        return Change(origin.evolve(requested=tuple(requested), requested_local=tuple(local)))


def _local_request(ctx: Context, spec: str, layered: list[LocalPackage], base_pkgs: list[Nevra]) -> LocalPackage:
    sha, nevra = import_local_rpm(ctx.repo, Path(spec.removeprefix("file://")))
    if any(entry.sha256 == sha for entry in layered):
        raise InvalidInputError(f"Package '{nevra}' is already layered")
    if nevra in base_pkgs:
        raise InvalidInputError(f"Package '{nevra}' is already in the base")
    return LocalPackage(sha, nevra.nevra)


def _refuse_provided_by_base(ctx: Context, base: str, spec: str) -> None:
    if packages_or_none(ctx.repo, base) is None:
        return  # no rpmdb in the base: nothing provides anything
    with tempfile.TemporaryDirectory(prefix="strata-base-", dir=ctx.repo.tmp_dir) as tmp:
        info = read_base(ctx.repo, base, Path(tmp))
    providers = [p.nevra for p in info.packages if spec == p.nevra.name or spec in p.provides or spec in p.files]
    if providers:
        names = "".join(f" {p.nevra}" for p in providers)
        raise InvalidInputError(f'"{spec}" is already provided by:{names}. Use --allow-inactive to explicitly '
                                "require it.")


def uninstall(sysroot: Sysroot, stateroot: str | None, specs: Sequence[str], idempotent: bool,
              progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "uninstall", specs, progress, UninstallChange(list(specs), idempotent))


@dataclass
class UninstallChange:
    specs: list[str]
    idempotent: bool

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        requested = list(origin.requested)
        local = list(origin.requested_local)
        for spec in self.specs:
            matches_local = [e for e in local if e.nevra == spec or Nevra.parse(e.nevra).name == spec]
            if spec in requested:
                requested.remove(spec)
            elif matches_local:
                local = [e for e in local if e not in matches_local]
            elif not self.idempotent:
                raise InvalidInputError(f"Package/capability '{spec}' is not currently requested")
        return Change(origin.evolve(requested=tuple(requested), requested_local=tuple(local)))


def override_remove(sysroot: Sysroot, stateroot: str | None, names: Sequence[str], progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "override remove", names, progress, _OverrideRemove(list(names)))


@dataclass
class _OverrideRemove:
    names: list[str]

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        base = packages_or_none(ctx.repo, base_commit(ctx.repo, ctx.merge.csum)) or []
        removals = list(origin.override_remove)
        for name in self.names:
            if name in removals:
                raise InvalidInputError(f"Override already exists for package '{name}'")
            if not any(p.name == name for p in base):
                raise InvalidInputError(f'Package "{name}" not found')
            removals.append(name)
        return Change(origin.evolve(override_remove=tuple(removals)))


def override_replace(sysroot: Sysroot, stateroot: str | None, specs: Sequence[str], progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "override replace", specs, progress, _OverrideReplace(list(specs)))


@dataclass
class _OverrideReplace:
    specs: list[str]

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        base = packages_or_none(ctx.repo, base_commit(ctx.repo, ctx.merge.csum)) or []
        replacements = list(origin.override_replace_local)
        for spec in self.specs:
            if not _is_local(spec):
                raise InvalidInputError("Non-local replacement overrides not implemented yet")
            sha, nevra = import_local_rpm(ctx.repo, Path(spec.removeprefix("file://")))
            if not any(p.name == nevra.name for p in base):
                raise InvalidInputError(f"Package {nevra} doesn't replace a package of the same name")
            if any(Nevra.parse(e.nevra).name == nevra.name for e in replacements):
                raise InvalidInputError(f"Override already exists for package '{nevra.name}'")
            replacements.append(LocalPackage(sha, nevra.nevra))
        return Change(origin.evolve(override_replace_local=tuple(replacements)))


def override_reset(sysroot: Sysroot, stateroot: str | None, names: Sequence[str], reset_all: bool,
                   progress: Progress) -> Outcome:
    args = ["--all"] if reset_all else list(names)
    return run_verb(sysroot, stateroot, "override reset", args, progress, _OverrideReset(list(names), reset_all))


@dataclass
class _OverrideReset:
    names: list[str]
    reset_all: bool

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if self.reset_all:
            return Change(origin.evolve(override_remove=(), override_replace_local=()))
        removals = list(origin.override_remove)
        replacements = list(origin.override_replace_local)
        for name in self.names:
            matched = [e for e in replacements if Nevra.parse(e.nevra).name == name or e.nevra == name]
            if name in removals:
                removals.remove(name)
            elif matched:
                replacements = [e for e in replacements if e not in matched]
            else:
                raise InvalidInputError(f"No overrides for package '{name}'")
        return Change(origin.evolve(override_remove=tuple(removals), override_replace_local=tuple(replacements)))


def reset(sysroot: Sysroot, stateroot: str | None, progress: Progress) -> Outcome:
    return run_verb(sysroot, stateroot, "reset", [], progress, _Reset())


class _Reset:
    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        return Change(Origin(origin.refspec, origin.override_commit, extra=origin.extra))


# ---------------------------------------------------------------- kernel arguments


def pending_kargs(sysroot: Sysroot, stateroot: str | None) -> list[str]:
    """The kernel arguments the stateroot boots with next: those of its merge deployment."""
    from strata.sysroot import bls
    return bls.without_ostree_karg(open_context(sysroot, stateroot).merge.kargs)


def kargs(sysroot: Sysroot, stateroot: str | None, edits: KargEdits, progress: Progress) -> Outcome:
    args = [*(f"--replace={a}" for a in edits.replace), *(f"--append={a}" for a in edits.append),
            *(f"--delete={a}" for a in edits.delete)]
    return run_verb(sysroot, stateroot, "kargs", args, progress, _Kargs(edits))


@dataclass
class _Kargs:
    edits: KargEdits

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        return Change(ctx.origin(), kargs=self.edits)


# ---------------------------------------------------------------- rollback and cleanup


@dataclass
class RollbackResult:
    target: Deployment
    diff: PackageDiff | None


def rollback(sysroot: Sysroot, progress: Progress) -> RollbackResult:
    booted = sysroot.booted()
    deps = sysroot.deployments()
    stateroot = booted.stateroot if booted is not None else (deps[0].stateroot if deps else None)
    with Transaction(sysroot, "rollback", [], progress, stateroot=stateroot) as txn:
        booted = sysroot.booted()
        with txn.critical():
            target = ops.rollback(sysroot, txn.log)
    diff = package_diff(sysroot.repo, booted.csum, target.csum) if booted is not None else None
    return RollbackResult(target, diff)


@dataclass
class CleanupRequest:
    pending: bool = False
    rollback: bool = False
    base: bool = False
    repomd: bool = False


def cleanup(sysroot: Sysroot, stateroot: str | None, request: CleanupRequest, progress: Progress) -> bool:
    """rpm-ostree's cleanup: drop the pending and/or rollback deployments, prune (keeping every deployment's
    commit and base), drop cached metadata. Returns whether deployments changed."""
    name = _cleanup_stateroot(sysroot, stateroot)
    with Transaction(sysroot, "cleanup", _cleanup_args(request), progress, stateroot=name) as txn:
        drop = _cleanup_drop(sysroot, name, request)
        with txn.critical():
            if drop:
                deps = sysroot.deployments()
                if any(d.staged for d in deps if d.key in drop):
                    sysroot.clear_staged_state()
                sync_base_refs(sysroot)
                sysroot.write_deployments([d for d in deps if not d.staged and d.key not in drop])
            sync_base_refs(sysroot)
            if request.base or drop:
                sysroot.cleanup(prune_repo=True)
            if request.repomd:
                import shutil
                shutil.rmtree(sysroot.repo.path / "extensions" / "strata" / "cache" / "rpmmd", ignore_errors=True)
    return bool(drop)


def _cleanup_args(request: CleanupRequest) -> list[str]:
    flags = (("-p", request.pending), ("-r", request.rollback), ("-b", request.base), ("-m", request.repomd))
    return [flag for flag, wanted in flags if wanted]


def _cleanup_stateroot(sysroot: Sysroot, stateroot: str | None) -> str:
    if stateroot:
        return stateroot
    booted = sysroot.booted()
    deps = sysroot.deployments()
    return booted.stateroot if booted else (deps[0].stateroot if deps else "")


def _cleanup_drop(sysroot: Sysroot, stateroot: str, request: CleanupRequest) -> set[tuple[str, str]]:
    booted = sysroot.booted()
    deps = sysroot.deployments()
    index = next((i for i, d in enumerate(deps) if booted is not None and d.key == booted.key), 0)
    drop = set()
    for i, dep in enumerate(deps):
        if dep.stateroot != stateroot or sysroot.is_pinned(dep) or (booted and dep.key == booted.key):
            continue
        if (request.pending and i < index) or (request.rollback and i > index):
            drop.add(dep.key)
    return drop


# ---------------------------------------------------------------- apply-live


@dataclass
class LiveResult:
    diff: PackageDiff | None


def apply_live(sysroot: Sysroot, allow_replacement: bool, progress: Progress) -> LiveResult:
    booted = sysroot.booted()
    if booted is None:
        raise StrataError("apply-live needs a booted system (run `strata admin boot` first)")
    with Transaction(sysroot, "apply-live", ["--allow-replacement"] if allow_replacement else [], progress,
                     stateroot=booted.stateroot) as txn:
        deps = sysroot.deployments()
        index = next(i for i, d in enumerate(deps) if d.key == booted.key)
        pending = next((d for d in deps[:index] if d.stateroot == booted.stateroot), None)
        if pending is None:
            raise StrataError("No target commit specified and no pending deployment")
        before = livefs.live_commit(sysroot, booted) or booted.csum
        with txn.critical():
            livefs.apply_live(sysroot, booted, pending.csum, txn.log, allow_replacement=allow_replacement)
    return LiveResult(package_diff(sysroot.repo, before, pending.csum))


# ---------------------------------------------------------------- metadata


def refresh_md(sysroot: Sysroot, stateroot: str | None, force: bool, progress: Progress) -> bool:
    """Download the rpm-md metadata of the deployment's repositories; False when it has none."""
    from strata.packages.sources import open_repositories
    ctx = open_context(sysroot, stateroot)
    repos_dir = sysroot.deployment_dir(ctx.etc_merge) / "etc" / "yum.repos.d"
    if not repos_dir.is_dir():
        return False
    with Transaction(sysroot, "refresh-md", ["--force"] if force else [], progress, check=False):
        open_repositories(repos_dir, None, ctx.cachedir / "rpmmd", progress.message, force=force)
    return True
