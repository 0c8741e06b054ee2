"""Client transactions (rpm-ostree's verbs): each computes a new origin, rebuilds the target tree from the base
and the requests, and deploys it, staged on a booted system (spec D, E.5, I)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strata.core.db import commit_packages
from strata.core.layering import (
    BaseInfo,
    LayerPlan,
    build_layered_commit,
    open_deployment_repos,
    plan_layer,
    read_base,
    state_digest,
)
from strata.core.origin import Origin
from strata.core.pkgdiff import block_lines, diff_packages
from strata.errors import NotFoundError, StrataError
from strata.image.keyfile import KeyFile
from strata.image.repo import Repo
from strata.packages.nevra import Nevra
from strata.sysroot.deploy import DeployOptions, KargEdits, deploy
from strata.sysroot.sysroot import Deployment, Sysroot

Log = Callable[[str], None]
REBOOT_HINT = 'Run "systemctl reboot" to start a reboot'
QUEUED_HINT = 'Changes queued for next boot. Run "systemctl reboot" to start a reboot'


@dataclass
class Context:
    sysroot: Sysroot
    stateroot: str
    booted: Deployment | None
    origin_merge: Deployment  # first deployment of the stateroot: where the requests come from
    etc_merge: Deployment  # where /etc comes from: the booted one for the booted stateroot

    @property
    def repo(self) -> Repo:
        return self.sysroot.repo

    def origin(self) -> Origin:
        return Origin.from_keyfile(self.sysroot.read_origin(self.origin_merge))

    @property
    def is_guest(self) -> bool:
        return self.booted is not None and self.booted.stateroot != self.stateroot

    @property
    def cachedir(self) -> Path:
        return self.repo.path / "extensions" / "strata" / "cache"


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
    etc_merge = booted if booted is not None and booted.stateroot == name else mine[0]
    return Context(sysroot, name, booted, mine[0], etc_merge)


def base_commit(repo: Repo, commit: str) -> str:
    """The base of a deployment's commit: its parent when the commit is a client layer."""
    loaded = repo.load_commit(commit)
    if loaded.meta("rpmostree.clientlayer", False) and loaded.parent:
        return loaded.parent
    return commit


def is_layered(repo: Repo, commit: str) -> bool:
    return bool(repo.load_commit(commit).meta("rpmostree.clientlayer", False))


@dataclass
class Outcome:
    deployment: Deployment | None  # None: nothing changed
    commit: str | None = None


def transact(ctx: Context, origin: Origin, log: Log, *, base: str | None = None, kargs: KargEdits | None = None,
             force_new: bool = False) -> Outcome:
    """Rebuild the target from base (default: the current one) and origin, and deploy it."""
    repo = ctx.repo
    current = ctx.origin_merge
    base = base or base_commit(repo, current.csum)
    target = _target_commit(ctx, origin, base, log)
    unchanged = (target == current.csum and origin == ctx.origin() and (kargs is None or kargs.empty))
    if unchanged and not force_new:
        log("No change.")
        return Outcome(None, target)
    options = DeployOptions(ctx.stateroot, _origin_keyfile(origin), kargs or KargEdits(),
                            stage=ctx.booted is not None and not ctx.is_guest, not_as_default=ctx.is_guest)
    dep = deploy(ctx.sysroot, target, options, log)
    return Outcome(dep, target)


def _origin_keyfile(origin: Origin) -> KeyFile:
    return origin.evolve(pinned=False).to_keyfile()


def _target_commit(ctx: Context, origin: Origin, base: str, log: Log) -> str:
    if not origin.needs_local_assembly:
        return base
    repo = ctx.repo
    log(f"Checking out tree {base[:7]}... done")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="strata-base-", dir=repo.tmp_dir) as tmp:
        info = read_base(repo, base, Path(tmp))
    etc = ctx.sysroot.deployment_dir(ctx.etc_merge) / "etc"
    sources = open_deployment_repos(etc, ctx.cachedir / "rpmmd", log) if origin.requested else None
    plan = plan_layer(repo, origin, info, sources, log)
    reuse = _reusable_layer(ctx, base, origin, plan)
    if reuse is not None:
        return reuse
    return build_layered_commit(repo, info, origin, plan, sources, etc, ctx.cachedir, log)


def _reusable_layer(ctx: Context, base: str, origin: Origin, plan: LayerPlan) -> str | None:
    """The current layered commit, when it was built from the same base and the same state digest."""
    current = ctx.origin_merge.csum
    repo = ctx.repo
    if not is_layered(repo, current) or base_commit(repo, current) != base:
        return None
    if repo.load_commit(current).meta("rpmostree.state-sha512") == state_digest(origin, plan):
        return current
    return None


def print_result(ctx: Context, outcome: Outcome, log: Log, closing: str) -> None:
    """The package diff booted (or previous default) -> new default, then the closing line."""
    if outcome.deployment is None:
        return
    sysroot = Sysroot.open(ctx.sysroot.path)
    reference = ctx.booted if ctx.booted is not None and not ctx.is_guest else ctx.origin_merge
    new_default = next((d for d in sysroot.deployments() if d.stateroot == ctx.stateroot), None)
    if reference is not None and new_default is not None:
        try:
            old = commit_packages(ctx.repo, reference.csum)
            new = commit_packages(ctx.repo, new_default.csum)
            for line in block_lines(diff_packages(old, new)):
                log(line)
        except StrataError:
            pass
    log(closing)


def base_packages(repo: Repo, commit: str) -> list[Nevra]:
    return commit_packages(repo, base_commit(repo, commit))


def resolve_base_info(repo: Repo, commit: str, workdir: Path) -> BaseInfo:
    return read_base(repo, commit, workdir)
