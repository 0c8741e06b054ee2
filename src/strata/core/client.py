"""Client transactions (rpm-ostree's verbs, spec D, E.5, I): each verb turns its arguments into one change of
the origin (and of the kernel arguments), then the engine runs the same phases for every verb:

    resolve + pull -> plan -> assemble -> deploy (staged on a booted host) -> prune -> keep refs

inside a `Transaction` (lock, busy record, cancellation, invariants). Every change starts from the merge
deployment: the stateroot's pending deployment when there is one (staged or not), else the booted one,
else the stateroot's first; /etc comes from the booted deployment for the booted stateroot."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from strata.core import history
from strata.core.closure import check_closure
from strata.core.db import packages_or_none
from strata.core.layering import (
    BaseInfo,
    LayerPlan,
    PreviousLayer,
    build_layered_commit,
    import_local_rpm,
    plan_layer,
    read_base,
    state_digest,
)
from strata.core.origin import LocalPackage, Origin
from strata.core.pkgdiff import PackageDiff, diff_packages
from strata.core.refs import base_commit, is_layered, sync_base_refs
from strata.core.repopkgs import newest_in_repo, resolve_remote_replacements
from strata.core.repos import RepoOptions, open_repos
from strata.core.transaction import Progress, Transaction
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.keyfile import KeyFile
from strata.image.repo import Repo
from strata.packages import pkgcache
from strata.packages.nevra import Nevra
from strata.packages.sources import RepositorySet
from strata.sysroot import bls
from strata.sysroot import deploy as ops
from strata.sysroot.deploy import DeployOptions, KargEdits
from strata.sysroot.sysroot import Deployment, Sysroot


@dataclass(frozen=True)
class ChangeOptions:
    """What every base-changing verb takes besides its own arguments (rpm-ostree's options of the verbs that
    support package installs): extra package requests, and how far the transaction goes."""

    install: tuple[str, ...] = ()  # --install PKG
    uninstall: tuple[str, ...] = ()  # --uninstall PKG
    dry_run: bool = False  # resolve and print the transaction, change nothing
    cache_only: bool = False  # no download: the refs and packages already here
    download_only: bool = False  # fetch (and import) everything, deploy nothing
    lock_finalization: bool = False  # the staged deployment is not finalized at shutdown
    allow_downgrade: bool = True  # False: refuse a base older than the current one
    idempotent: bool = False
    allow_inactive: bool = False
    repos: RepoOptions = field(default_factory=RepoOptions)

    def args(self) -> list[str]:
        """The options as they appear in the transaction's title and history."""
        flags = (("--dry-run", self.dry_run), ("--cache-only", self.cache_only),
                 ("--download-only", self.download_only), ("--lock-finalization", self.lock_finalization))
        return ([f"--install={p}" for p in self.install] + [f"--uninstall={p}" for p in self.uninstall]
                + [flag for flag, wanted in flags if wanted])


@dataclass
class Context:
    sysroot: Sysroot
    stateroot: str
    booted: Deployment | None
    merge: Deployment  # where the origin and kargs come from: pending, else booted, else the first
    etc_merge: Deployment  # where /etc comes from: the booted one for the booted stateroot
    options: ChangeOptions = field(default_factory=ChangeOptions)

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


def open_context(sysroot: Sysroot, stateroot: str | None, options: ChangeOptions | None = None) -> Context:
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
    return Context(sysroot, name, booted, merge, etc_merge, options or ChangeOptions())


@dataclass(frozen=True)
class Change:
    """What a verb asks for: the new origin, a new base commit (None: keep the current base), kernel
    argument edits, and whether to deploy even when nothing differs."""

    origin: Origin
    base: str | None = None
    kargs: KargEdits | None = None
    force_new: bool = False


@dataclass
class PlannedTransaction:
    """What a --dry-run would have done: the packages to install (NEVRA, repository) and to remove."""

    install: list[tuple[str, str]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    deployment: Deployment | None  # None: nothing changed
    commit: str | None = None
    diff: PackageDiff | None = None  # reference -> new deployment; None without package lists
    guest: bool = False  # the change went to a stateroot that is not the booted one
    staged: bool = False
    planned: PlannedTransaction | None = None  # set by --dry-run
    downloaded: bool = False  # set by --download-only

    @property
    def changed(self) -> bool:
        return self.deployment is not None


# ---------------------------------------------------------------- the phases every change goes through


def apply_change(txn: Transaction, ctx: Context, change: Change) -> Outcome:
    repo = ctx.repo
    base = change.base or base_commit(repo, ctx.merge.csum)
    if ctx.options.dry_run:
        return Outcome(None, guest=ctx.is_guest, planned=_planned_transaction(txn, ctx, change.origin, base))
    txn.checkpoint("before-assemble")
    target = _target_commit(txn, ctx, change.origin, base)
    txn.checkpoint("after-assemble")
    if ctx.options.download_only:
        return Outcome(None, target, guest=ctx.is_guest, downloaded=True)
    new_kargs = change.kargs.apply(ctx.merge.kargs) if change.kargs is not None else ctx.merge.kargs
    unchanged = target == ctx.merge.csum and change.origin == ctx.origin() and new_kargs == ctx.merge.kargs
    if unchanged and not change.force_new:
        return Outcome(None, target, guest=ctx.is_guest)
    stage = ctx.booted is not None and not ctx.is_guest
    from strata.core.initramfs import overlay_initrds_for  # the module builds its verbs on this one
    options = DeployOptions(ctx.stateroot, _origin_keyfile(change.origin), change.kargs or KargEdits(), stage=stage,
                            not_as_default=ctx.is_guest, merge=ctx.merge, etc_merge=ctx.etc_merge,
                            overlay_initrds=overlay_initrds_for(ctx.sysroot, ctx.etc_merge, change.origin))
    # The new base is held by a ref before the deployment's own cleanup prunes the repository.
    sync_base_refs(ctx.sysroot, [base] if is_layered(repo, target) else [])
    with txn.critical():
        dep = ops.deploy(ctx.sysroot, target, options, txn.log)
        if stage:  # as ostree: a new staged deployment is locked only when asked again
            ctx.sysroot.set_finalization_locked(ctx.options.lock_finalization)
        txn.checkpoint("after-deploy")
        sync_base_refs(ctx.sysroot)
    return Outcome(dep, target, package_diff(repo, ctx.reference.csum, target), guest=ctx.is_guest, staged=stage)


def _origin_keyfile(origin: Origin) -> KeyFile:
    return origin.evolve(pinned=False).to_keyfile()


@dataclass
class _Layer:
    info: BaseInfo
    sources: RepositorySet | None
    plan: LayerPlan
    etc: Path
    origin: Origin  # what the layer is built from: repo replacements resolved to the builds they name now


def _plan(txn: Transaction, ctx: Context, origin: Origin, base: str) -> _Layer:
    repo = ctx.repo
    log = txn.log
    log(f"Checking out tree {base[:7]}... done")
    with tempfile.TemporaryDirectory(prefix="strata-base-", dir=repo.tmp_dir) as tmp:
        info = read_base(repo, base, Path(tmp))
    etc = ctx.sysroot.deployment_dir(ctx.etc_merge) / "etc"
    sources = None
    if origin.requested or origin.override_replace_remote:
        sources = open_repos(etc, ctx.cachedir / "rpmmd", log, repos_for(origin, ctx.options.repos))
    origin = _resolved_replacements(ctx, origin, sources, log)
    txn.checkpoint("after-resolve")
    plan = plan_layer(repo, origin, info, sources, log)
    if ctx.options.cache_only:
        _refuse_downloads(repo, plan)
    return _Layer(info, sources, plan, etc, origin)


def repos_for(origin: Origin, options: RepoOptions) -> RepoOptions:
    """The repositories a layer uses: a repository named by a replacement override counts as enabled."""
    named = tuple(e.repo for e in origin.override_replace_remote if e.repo not in options.enable)
    return dataclasses.replace(options, enable=(*options.enable, *named)) if named else options


def _resolved_replacements(ctx: Context, origin: Origin, sources: RepositorySet | None, log: Callable[[str], None]
                           ) -> Origin:
    if origin.override_replace_remote and ctx.options.cache_only and sources is not None:
        for entry in origin.override_replace_remote:
            for name in entry.packages:
                candidate = newest_in_repo(sources, entry.repo, name)
                if pkgcache.cached_commit(ctx.repo, candidate.nevra, candidate.checksum_text, nodocs=False) is None:
                    raise StrataError(f"--cache-only: not in the package cache and not downloaded: "
                                      f"{candidate.nevra.nevra}")
    return resolve_remote_replacements(ctx.repo, origin, sources, ctx.cachedir, log)


def _refuse_downloads(repo: Repo, plan: LayerPlan) -> None:
    missing = [c.nevra.nevra for c in plan.install
               if pkgcache.cached_commit(repo, c.nevra, c.checksum_text, nodocs=False) is None]
    if missing:
        raise StrataError(f"--cache-only: not in the package cache and not downloaded: {', '.join(missing)}")


def _planned_transaction(txn: Transaction, ctx: Context, origin: Origin, base: str) -> PlannedTransaction:
    if not origin.needs_local_assembly:
        return PlannedTransaction()
    plan = _plan(txn, ctx, origin, base).plan
    install = [(c.nevra.nevra, c.repo_id) for c in plan.install]
    install += [(nevra.nevra, "commandline") for nevra, _commit in plan.local]
    install += [(new.nevra, "commandline") for new, _commit, _old in plan.replacements]
    remove = [n.nevra for n in plan.removals] + [old.nevra for _new, _commit, old in plan.replacements]
    return PlannedTransaction(install, remove)


def _target_commit(txn: Transaction, ctx: Context, origin: Origin, base: str) -> str:
    if not origin.needs_local_assembly:
        return base
    repo = ctx.repo
    layer = _plan(txn, ctx, origin, base)
    info, sources, plan, etc, origin = layer.info, layer.sources, layer.plan, layer.etc, layer.origin
    reuse = _reusable_layer(ctx, base, origin, plan)
    if reuse is not None:
        return reuse
    commit = build_layered_commit(repo, info, origin, plan, sources, etc, ctx.cachedir, txn.log,
                                  previous=PreviousLayer(ctx.merge.csum, ctx.origin()))
    if plan.removals or plan.replacements or plan.local:
        check_closure(repo, base, commit)
    if origin.regenerate_initramfs:
        from strata.core.initramfs import regenerate_in_commit
        commit = regenerate_in_commit(repo, commit, origin.initramfs_args, etc.parent, txn.log)
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
             build: ChangeBuilder, options: ChangeOptions | None = None) -> Outcome:
    """One transaction: open the context under the lock, let the verb build its change (plus the packages of
    --install/--uninstall), apply it, and record it in the history."""
    options = options or ChangeOptions()
    words = [*args, *options.args()]
    ctx = open_context(sysroot, stateroot, options)
    _check_options(ctx)
    with Transaction(sysroot, verb, words, progress, stateroot=ctx.stateroot) as txn:
        ctx = open_context(sysroot, stateroot, options)
        change = _with_package_options(txn, ctx, build(txn, ctx))
        if change is None:
            return Outcome(None, guest=ctx.is_guest)
        outcome = apply_change(txn, ctx, change)
        if outcome.deployment is not None:
            history.record(sysroot, verb, words, outcome.deployment)
        return outcome


def _check_options(ctx: Context) -> None:
    if ctx.options.lock_finalization and (ctx.booted is None or ctx.is_guest):
        raise InvalidInputError("--lock-finalization needs a staged deployment, and only a change to the booted "
                                "stateroot is staged (boot the sysroot first: `strata admin boot`)")
    if ctx.options.dry_run and ctx.options.download_only:
        raise InvalidInputError("Cannot specify both --dry-run and --download-only")


def _with_package_options(txn: Transaction, ctx: Context, change: Change | None) -> Change | None:
    """--uninstall then --install on top of whatever the verb changed (rpm-ostree's one-transaction combo)."""
    options = ctx.options
    if not (options.install or options.uninstall):
        return change
    current = change or Change(ctx.origin())
    origin = current.origin
    if options.uninstall:
        origin = without_packages(origin, options.uninstall, options.idempotent)
    if options.install:
        install = InstallOptions(idempotent=options.idempotent, allow_inactive=options.allow_inactive)
        origin = with_packages(ctx, origin, options.install, install)
    return Change(origin, current.base, current.kargs, current.force_new)


# ---------------------------------------------------------------- package layering


@dataclass
class InstallOptions:
    idempotent: bool = False
    allow_inactive: bool = False


def install(sysroot: Sysroot, stateroot: str | None, specs: Sequence[str], options: InstallOptions,
            progress: Progress, change_options: ChangeOptions | None = None, *, fileoverride: bool = False
            ) -> Outcome:
    args = [*(["--force-replacefiles"] if fileoverride else []), *specs]
    return run_verb(sysroot, stateroot, "install", args, progress, InstallChange(list(specs), options, fileoverride),
                    change_options)


def _is_local(spec: str) -> bool:
    return spec.endswith(".rpm") or spec.startswith("file://")


@dataclass
class InstallChange:
    specs: list[str]
    options: InstallOptions
    fileoverride: bool = False  # --force-replacefiles: local RPMs that may replace files of other packages

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        return Change(with_packages(ctx, ctx.origin(), self.specs, self.options, self.fileoverride))


def with_packages(ctx: Context, origin: Origin, specs: Sequence[str], options: InstallOptions,
                  fileoverride: bool = False) -> Origin:
    """The origin with specs requested: names and capabilities from the repositories, local RPMs by their
    header digest (as file overrides with --force-replacefiles)."""
    requested = list(origin.requested)
    local = list(origin.requested_local_fileoverride if fileoverride else origin.requested_local)
    base = base_commit(ctx.repo, ctx.merge.csum)
    base_pkgs = packages_or_none(ctx.repo, base) or []
    for spec in specs:
        if _is_local(spec):
            local.append(_local_request(ctx, spec, [*origin.requested_local, *origin.requested_local_fileoverride,
                                                     *local], base_pkgs))
            continue
        if fileoverride:
            raise InvalidInputError(f"--force-replacefiles applies to local RPMs only, not '{spec}'")
        if spec in requested:
            if options.idempotent:
                continue
            raise InvalidInputError(f"Package/capability '{spec}' is already requested")
        if not options.allow_inactive:
            _refuse_provided_by_base(ctx, base, spec)
        requested.append(spec)
    if fileoverride:
        return origin.evolve(requested_local_fileoverride=tuple(local))
    return origin.evolve(requested=tuple(requested), requested_local=tuple(local))


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
              progress: Progress, options: ChangeOptions | None = None) -> Outcome:
    return run_verb(sysroot, stateroot, "uninstall", specs, progress, UninstallChange(list(specs), idempotent),
                    options)


@dataclass
class UninstallChange:
    specs: list[str]
    idempotent: bool

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        return Change(without_packages(ctx.origin(), self.specs, self.idempotent))


def without_packages(origin: Origin, specs: Sequence[str], idempotent: bool) -> Origin:
    requested = list(origin.requested)
    local = list(origin.requested_local)
    overrides = list(origin.requested_local_fileoverride)
    for spec in specs:
        def matches(entry: LocalPackage, spec: str = spec) -> bool:
            return entry.nevra == spec or Nevra.parse(entry.nevra).name == spec
        if spec in requested:
            requested.remove(spec)
        elif any(matches(e) for e in local + overrides):
            local = [e for e in local if not matches(e)]
            overrides = [e for e in overrides if not matches(e)]
        elif not idempotent:
            raise InvalidInputError(f"Package/capability '{spec}' is not currently requested")
    return origin.evolve(requested=tuple(requested), requested_local=tuple(local),
                         requested_local_fileoverride=tuple(overrides))


def uninstall_all(sysroot: Sysroot, stateroot: str | None, progress: Progress,
                  options: ChangeOptions | None = None) -> Outcome:
    """`uninstall --all`: every layered package request goes (--install may add new ones in the same change)."""
    return run_verb(sysroot, stateroot, "uninstall", ["--all"], progress, _UninstallAll(), options)


class _UninstallAll:
    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if not (origin.requested or origin.requested_local or origin.requested_local_fileoverride):
            return None
        return Change(origin.evolve(requested=(), requested_local=(), requested_local_fileoverride=()))


def override_remove(sysroot: Sysroot, stateroot: str | None, names: Sequence[str], progress: Progress,
                    replace: Sequence[str] = (), options: ChangeOptions | None = None) -> Outcome:
    """Remove base packages; with --replace RPM, replace others in the same change."""
    args = [*names, *(f"--replace={r}" for r in replace)]
    return run_verb(sysroot, stateroot, "override remove", args, progress,
                    _Overrides(list(names), list(replace)), options)


def override_replace(sysroot: Sysroot, stateroot: str | None, specs: Sequence[str], progress: Progress,
                     remove: Sequence[str] = (), options: ChangeOptions | None = None) -> Outcome:
    """Replace base packages with local RPMs; with --remove PKG, remove others in the same change."""
    args = [*specs, *(f"--remove={r}" for r in remove)]
    return run_verb(sysroot, stateroot, "override replace", args, progress,
                    _Overrides(list(remove), list(specs)), options)


@dataclass
class _Overrides:
    removals: list[str]
    replacements: list[str]

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if self.removals:
            origin = _OverrideRemove(self.removals).updated(ctx, origin)
        if self.replacements:
            origin = _OverrideReplace(self.replacements).updated(ctx, origin)
        return Change(origin)


@dataclass
class _OverrideRemove:
    names: list[str]

    def updated(self, ctx: Context, origin: Origin) -> Origin:
        base = packages_or_none(ctx.repo, base_commit(ctx.repo, ctx.merge.csum)) or []
        removals = list(origin.override_remove)
        for name in self.names:
            if name in removals:
                raise InvalidInputError(f"Override already exists for package '{name}'")
            if not any(p.name == name for p in base):
                raise InvalidInputError(f'Package "{name}" not found')
            removals.append(name)
        return origin.evolve(override_remove=tuple(removals))


@dataclass
class _OverrideReplace:
    specs: list[str]

    def updated(self, ctx: Context, origin: Origin) -> Origin:
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
        return origin.evolve(override_replace_local=tuple(replacements))


def override_reset(sysroot: Sysroot, stateroot: str | None, names: Sequence[str], reset_all: bool,
                   progress: Progress, options: ChangeOptions | None = None) -> Outcome:
    args = ["--all"] if reset_all else list(names)
    return run_verb(sysroot, stateroot, "override reset", args, progress, _OverrideReset(list(names), reset_all),
                    options)


@dataclass
class _OverrideReset:
    names: list[str]
    reset_all: bool

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if self.reset_all:
            return Change(origin.evolve(override_remove=(), override_replace_local=(), override_replace_remote=()))
        removals = list(origin.override_remove)
        replacements = list(origin.override_replace_local)
        remote = list(origin.override_replace_remote)
        for name in self.names:
            matched = [e for e in replacements if Nevra.parse(e.nevra).name == name or e.nevra == name]
            if name in removals:
                removals.remove(name)
            elif matched:
                replacements = [e for e in replacements if e not in matched]
            elif any(name in entry.packages for entry in remote):
                remote = [entry.evolve_without(name) for entry in remote if entry.packages != (name,)]
            else:
                raise InvalidInputError(f"No overrides for package '{name}'")
        return Change(origin.evolve(override_remove=tuple(removals), override_replace_local=tuple(replacements),
                                    override_replace_remote=tuple(remote)))


@dataclass(frozen=True)
class ResetRequest:
    """`reset` with -l/-o/-i takes away only those parts; without any of them, every mutation."""

    overlays: bool = False  # -l: layered packages
    overrides: bool = False  # -o: base package overrides
    initramfs: bool = False  # -i: initramfs regeneration

    @property
    def everything(self) -> bool:
        return not (self.overlays or self.overrides or self.initramfs)

    def args(self) -> list[str]:
        flags = (("--overlays", self.overlays), ("--overrides", self.overrides), ("--initramfs", self.initramfs))
        return [flag for flag, wanted in flags if wanted]


def reset(sysroot: Sysroot, stateroot: str | None, progress: Progress, request: ResetRequest | None = None,
          options: ChangeOptions | None = None) -> Outcome:
    request = request or ResetRequest()
    return run_verb(sysroot, stateroot, "reset", request.args(), progress, _Reset(request), options)


@dataclass
class _Reset:
    request: ResetRequest

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        if self.request.everything:
            return Change(origin.evolve(requested=(), requested_local=(), requested_local_fileoverride=(),
                                        override_remove=(), override_replace_local=(),
                                        override_replace_remote=(), regenerate_initramfs=False,
                                        initramfs_args=(), initramfs_etc=()))
        if self.request.overlays:
            origin = origin.evolve(requested=(), requested_local=(), requested_local_fileoverride=())
        if self.request.overrides:
            origin = origin.evolve(override_remove=(), override_replace_local=(), override_replace_remote=())
        if self.request.initramfs:
            origin = origin.evolve(regenerate_initramfs=False, initramfs_args=(), initramfs_etc=())
        return Change(origin)


# ---------------------------------------------------------------- kernel arguments


def pending_kargs(sysroot: Sysroot, stateroot: str | None) -> list[str]:
    """The kernel arguments the stateroot boots with next: those of its merge deployment."""
    return bls.without_ostree_karg(open_context(sysroot, stateroot).merge.kargs)


@dataclass(frozen=True)
class KargRequest:
    """rpm-ostree's kargs edits, applied in its order: replace, append, delete, then the conditional ones. The
    arguments edited are the merge deployment's, or those of --deploy-index N, or (--import-proc-cmdline)
    those the system booted with; `replace_all` (from --editor) is the new list as a whole."""

    edits: KargEdits = field(default_factory=KargEdits)
    append_if_missing: tuple[str, ...] = ()
    delete_if_present: tuple[str, ...] = ()
    import_proc_cmdline: bool = False
    deploy_index: int | None = None
    replace_all: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return (self.edits.empty and not self.append_if_missing and not self.delete_if_present
                and not self.import_proc_cmdline and self.replace_all is None)

    def apply(self, current: list[str]) -> list[str]:
        if self.replace_all is not None:
            return list(self.replace_all)
        args = self.edits.apply(current)
        for item in self.append_if_missing:
            if not any(bls.karg_key(a) == bls.karg_key(item) for a in args):
                args.append(item)
        for item in self.delete_if_present:
            args = bls.delete_karg(args, item)
        return args

    def args(self) -> list[str]:
        words = [*(f"--replace={a}" for a in self.edits.replace), *(f"--append={a}" for a in self.edits.append),
                 *(f"--delete={a}" for a in self.edits.delete),
                 *(f"--append-if-missing={a}" for a in self.append_if_missing),
                 *(f"--delete-if-present={a}" for a in self.delete_if_present)]
        if self.import_proc_cmdline:
            words.append("--import-proc-cmdline")
        if self.deploy_index is not None:
            words.append(f"--deploy-index={self.deploy_index}")
        if self.replace_all is not None:
            words.append("--editor")
        return words


def kargs_source(sysroot: Sysroot, stateroot: str | None, request: KargRequest) -> list[str]:
    """The arguments a kargs request starts from (without ostree=)."""
    return _kargs_source(open_context(sysroot, stateroot), request)


def _kargs_source(ctx: Context, request: KargRequest) -> list[str]:
    if request.import_proc_cmdline:
        cmdline = ctx.sysroot.booted_cmdline()
        if cmdline is None:
            raise StrataError("--import-proc-cmdline needs a booted system (run `strata admin boot` first)")
        return [a for a in bls.without_ostree_karg(cmdline.split()) if bls.karg_key(a) not in _BOOTLOADER_KARGS]
    if request.deploy_index is not None:
        return bls.without_ostree_karg(ops.by_index(ctx.sysroot, request.deploy_index).kargs)
    return bls.without_ostree_karg(ctx.merge.kargs)


_BOOTLOADER_KARGS = frozenset({"BOOT_IMAGE", "initrd"})  # set by the boot loader, not by the entry


def kargs(sysroot: Sysroot, stateroot: str | None, edits: KargEdits | KargRequest, progress: Progress,
          options: ChangeOptions | None = None) -> Outcome:
    request = edits if isinstance(edits, KargRequest) else KargRequest(edits)
    return run_verb(sysroot, stateroot, "kargs", request.args(), progress, _Kargs(request), options)


@dataclass
class _Kargs:
    request: KargRequest

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        current = bls.without_ostree_karg(ctx.merge.kargs)
        new = self.request.apply(_kargs_source(ctx, self.request))
        if new == current:
            return None
        return Change(ctx.origin(), kargs=KargEdits(none=True, append=new))


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
            history.record(sysroot, "rollback", [], target)
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
