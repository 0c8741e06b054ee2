"""`compose local`: a new tree composed from an installed deployment's package set plus more packages,
committed to `local/NAME` in the sysroot repository so that the machine (or others, through a published
copy of the ref) can rebase onto it; `compose trees` lists those trees."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata import fsroot
from strata.core import admin
from strata.core.assemble import LazyTree
from strata.core.compose import PKGCACHE_REPO, ComposeOptions, ComposePlan, ComposeResult, build_and_commit, input_hash
from strata.core.layering import BaseInfo, local_package_commit, read_base
from strata.core.origin import Origin
from strata.core.refs import base_commit
from strata.core.repos import RepoOptions, open_repos
from strata.core.treefile import Treefile, host_basearch
from strata.core.version import next_version
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image.repo import Repo, RepoMode, validate_ref
from strata.image.transfer import copy_commit
from strata.packages.importer import ImportOptions, import_package
from strata.packages.nevra import Nevra
from strata.packages.rpmread import RpmPackage
from strata.packages.solver import LOCAL_REPO, Candidate
from strata.packages.sources import RepositorySet
from strata.sysroot.sysroot import Deployment, Sysroot

Log = Callable[[str], None]
LOCAL_REF_PREFIX = "local/"
FROM_PACKAGE_CACHE = "@pkgcache"  # repo id shown for local RPMs the deployment layered earlier
_REPO_FILE_LIMIT = 1024 * 1024
META_SOURCE_CHECKSUM = "strata.local.source-checksum"
META_SOURCE_BASE = "strata.local.source-base"
META_SOURCE_REFSPEC = "strata.local.source-refspec"
META_SOURCE_ORIGIN = "strata.local.source-origin"
META_SOURCE_VERSION = "strata.local.source-version"
META_REQUESTED = "strata.local.requested"
META_ADDED = "strata.local.added"
META_UPDATED = "strata.local.updated"


@dataclass
class LocalComposeRequest:
    packages: list[str]  # names or provides, from the deployment's repositories
    local_rpms: list[Path] = field(default_factory=list)
    stateroot: str | None = None
    ref: str | None = None  # default local/<stateroot>
    dry_run: bool = False


@dataclass
class LocalPlan:
    """What the local tree will hold, decided before anything is written."""

    source: Deployment
    origin: Origin
    kept: list[Candidate]  # the deployment's packages, in its rpmdb order
    added: list[Candidate]  # new packages (requested and their dependencies)
    updated: list[tuple[Nevra, Candidate]]  # (installed build, newer build a new package requires)
    prepared: dict[str, str]  # NEVRA -> package commit in the sysroot repo (local RPMs layered earlier)
    local_files: dict[str, Path]  # NEVRA -> RPM file given on the command line

    @property
    def packages(self) -> list[Candidate]:
        return self.kept + self.added + [new for _old, new in self.updated]


@dataclass
class LocalTree:
    ref: str
    commit: str
    version: str | None
    source_checksum: str | None
    source_refspec: str | None
    source_version: str | None
    requested: list[str]
    added: list[str]
    updated: list[tuple[str, str]]


def request_from_words(words: list[str], stateroot: str | None, ref: str | None, *,
                       dry_run: bool = False) -> LocalComposeRequest:
    """PKG|file.rpm arguments: a word ending in .rpm (or a file:// URL) is an RPM file, as for install."""
    names, files = [], []
    for word in words:
        if word.endswith(".rpm") or word.startswith("file://"):
            files.append(Path(word.removeprefix("file://")))
        else:
            names.append(word)
    return LocalComposeRequest(names, files, stateroot, ref, dry_run)


def compose_local(sysroot: Sysroot, request: LocalComposeRequest, log: Log) -> ComposeResult:
    """Plan (listed before anything is written), then compose with `compose tree`'s pipeline."""
    if not request.packages and not request.local_rpms:
        raise InvalidInputError("no packages given to add to the local tree")
    source = source_deployment(sysroot, request.stateroot)
    ref = request.ref or f"{LOCAL_REF_PREFIX}{source.stateroot}"
    check_local_ref(ref)
    repo = sysroot.repo
    cachedir = repo.path / "extensions" / "strata" / "compose-cache"
    cachedir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compose-local-", dir=repo.tmp_dir) as work:
        workdir = Path(work)
        etc = sysroot.deployment_dir(source) / "etc"
        sources = open_repos(etc, cachedir / "rpmmd", log, RepoOptions())
        if sources is None:
            raise StrataError(f"the deployment has no /etc/yum.repos.d ({etc}) to compose from")
        installed = read_base(repo, source.csum, workdir)
        origin = Origin.from_keyfile(sysroot.read_origin(source))
        plan = plan_local(repo, source, origin, installed, sources, request, log)
        _log_plan(plan, repo, log)
        result = ComposeResult(ref, None, None, [c.nevra for c in plan.packages], "")
        if request.dry_run:
            log("--dry-run complete; exiting")
            return result
        pkgcache = Repo.init(cachedir / PKGCACHE_REPO, RepoMode.BARE)
        documentation = _has_documentation(repo, base_commit(repo, source.csum))
        prepared = _prepare_packages(repo, pkgcache, plan, documentation)
        treefile = _local_treefile(workdir, etc, ref, sources, plan, documentation)
        compose_plan = ComposePlan(
            treefile, repo, source.csum, cachedir, sources, plan.packages, input_hash(treefile, plan.packages),
            _next_version(repo, ref, sysroot.commit_version(source.csum)), repo.read_ref(ref), prepared)
        options = ComposeOptions(repo=repo.path, cachedir=cachedir, extra_metadata=_metadata(sysroot, plan, request))
        result.inputhash = compose_plan.inputhash
        result.commit = build_and_commit(compose_plan, pkgcache, options, log, result)
        result.version = compose_plan.version
    return result


def source_deployment(sysroot: Sysroot, stateroot: str | None) -> Deployment:
    """The booted deployment, or the default one of --os when that names another stateroot."""
    booted = sysroot.booted()
    if booted is not None and stateroot in (None, booted.stateroot):
        return booted
    name = admin.default_stateroot(sysroot, stateroot)
    found = next((d for d in sysroot.deployments() if d.stateroot == name and not d.staged), None)
    if found is None:
        raise NotFoundError(f"No deployment for OS '{name}'")
    return found


def check_local_ref(ref: str) -> None:
    if not ref.startswith(LOCAL_REF_PREFIX) or ref == LOCAL_REF_PREFIX:
        raise InvalidInputError(f"--ref must name a ref under {LOCAL_REF_PREFIX} (local/NAME): {ref}")
    validate_ref(ref)


def plan_local(repo: Repo, source: Deployment, origin: Origin, installed: BaseInfo, sources: RepositorySet,
               request: LocalComposeRequest, log: Log) -> LocalPlan:
    solver = sources.solver(installed.packages)
    local_files = {RpmPackage.open(path).nevra.nevra: path for path in request.local_rpms}
    solver.add_local_rpms(local_files.values())
    for name in request.packages:
        provided = solver.installed_providers(name)
        if provided:
            log(f"{name} is already installed ({' '.join(n.nevra for n in provided)})")
    solution = solver.resolve(request.packages, allow_updates=True)
    new_by_name = {c.nevra.name: c for c in solution.install}
    dropped = [n for n in solution.erase if n.name not in new_by_name]
    if dropped:
        raise StrataError(f"Installed packages would be removed: {', '.join(n.nevra for n in dropped)}")
    erased = set(solution.erase)
    updated = [(old, new_by_name[old.name]) for old in solution.erase]
    updated_names = {old.name for old in solution.erase}
    layered = _layered_local_packages(repo, origin)
    kept: list[Candidate] = []
    prepared: dict[str, str] = {}
    missing: list[str] = []
    for nevra in installed.nevras:
        if nevra in erased:
            continue
        candidate = solver.available(nevra)
        if candidate is None and nevra.nevra in layered:
            sha256, prepared[nevra.nevra] = layered[nevra.nevra]
            candidate = Candidate(nevra, FROM_PACKAGE_CACHE, "", ("sha256", sha256), 0)
        if candidate is None:
            missing.append(nevra.nevra)
        else:
            kept.append(candidate)
    if missing:
        raise NotFoundError("Packages of the deployment are in none of its repositories: " + ", ".join(missing))
    added = [c for c in solution.install if c.nevra.name not in updated_names]
    return LocalPlan(source, origin, kept, added, updated, prepared, local_files)


def _layered_local_packages(repo: Repo, origin: Origin) -> dict[str, tuple[str, str]]:
    """NEVRA -> (header SHA-256, package commit) of the local RPMs the origin layers or overrides with."""
    found: dict[str, tuple[str, str]] = {}
    for entry in (*origin.requested_local, *origin.requested_local_fileoverride, *origin.override_replace_local):
        nevra, commit = local_package_commit(repo, entry.sha256, entry.nevra)
        found[nevra.nevra] = (entry.sha256, commit)
    return found


def _log_plan(plan: LocalPlan, repo: Repo, log: Log) -> None:
    source = plan.source
    version = repo.load_commit(source.csum).version
    log(f"Source: {source.stateroot} deployment {source.name}{f' (version {version})' if version else ''}, "
        f"origin {plan.origin.refspec}")
    log(f"Packages of the deployment: {len(plan.kept) + len(plan.updated)}")
    if plan.updated:
        log(f"Updating {len(plan.updated)} package{'s' if len(plan.updated) != 1 else ''} (required by new ones):")
        for old, new in plan.updated:
            log(f"  {old.nevra} -> {new.nevra.nevra} ({new.repo_id})")
    log(f"Adding {len(plan.added)} package{'s' if len(plan.added) != 1 else ''}:")
    for candidate in plan.added:
        log(f"  {candidate.nevra.nevra} ({candidate.repo_id})")


def _prepare_packages(repo: Repo, pkgcache: Repo, plan: LocalPlan, documentation: bool) -> dict[str, str]:
    """Package commits in the compose cache for what no repository serves: layered local RPMs (copied from
    the sysroot repo) and RPM files from the command line (imported)."""
    prepared: dict[str, str] = {}
    for nevra, commit in plan.prepared.items():
        copy_commit(repo, pkgcache, commit)
        prepared[nevra] = commit
    for candidate in plan.packages:
        path = plan.local_files.get(candidate.nevra.nevra)
        if candidate.repo_id == LOCAL_REPO and path is not None:
            with pkgcache.lock():
                prepared[candidate.nevra.nevra] = import_package(pkgcache, RpmPackage.open(path),
                                                                 ImportOptions(nodocs=not documentation))
    return prepared


def _has_documentation(repo: Repo, commit: str) -> bool:
    """Whether the source's base was composed with documentation (its /usr/share/doc has anything)."""
    node = LazyTree.of_commit(repo, commit).lookup_dir("usr/share/doc")
    return node is not None and bool(node.files or node.dirs)


def _local_treefile(workdir: Path, etc: Path, ref: str, sources: RepositorySet, plan: LocalPlan,
                    documentation: bool) -> Treefile:
    """The treefile of the local tree; the deployment's .repo files are carried into its /etc so the new
    tree installs from the same repositories."""
    repo_files = _copy_repo_files(etc, workdir)
    data = {
        "ref": ref,
        "repos": [meta.config.id for meta in sources.metadata],
        "packages": [c.nevra.nevra for c in plan.packages],
        "documentation": documentation,
        "recommends": True,  # as plan_local solved
        "add-files": [[name, f"/etc/yum.repos.d/{name}"] for name in repo_files],
    }
    return Treefile(workdir / "treefile.json", data, host_basearch())


def _copy_repo_files(etc: Path, workdir: Path) -> list[str]:
    names = []
    repos_dir = etc / "yum.repos.d"
    for path in sorted(repos_dir.glob("*.repo")):
        content = fsroot.read_in_root(etc.parent, f"etc/yum.repos.d/{path.name}", _REPO_FILE_LIMIT)
        if content is None:
            continue  # not a regular file inside the deployment
        (workdir / path.name).write_bytes(content)
        names.append(path.name)
    return names


def _next_version(repo: Repo, ref: str, source_version: str | None) -> str:
    """SOURCE.local, then SOURCE.local.1, .2 ...; a source that is itself a local tree counts on."""
    stem = (source_version or "").partition(".local")[0]
    prefix = f"{stem}.local" if stem else "local"
    previous = repo.read_ref(ref)
    last = repo.load_commit(previous).version if previous else None
    if last is None or not last.startswith(prefix):
        last = source_version if source_version and source_version.startswith(prefix) else None
    return next_version(prefix, last)


def _metadata(sysroot: Sysroot, plan: LocalPlan, request: LocalComposeRequest) -> list[tuple[str, str, object]]:
    source = plan.source
    repo = sysroot.repo
    metadata: list[tuple[str, str, object]] = [
        (META_SOURCE_CHECKSUM, "s", source.csum),
        (META_SOURCE_BASE, "s", base_commit(repo, source.csum)),
        (META_SOURCE_REFSPEC, "s", plan.origin.refspec),
        (META_SOURCE_ORIGIN, "s", sysroot.read_origin(source).serialize()),
        (META_REQUESTED, "as", [*request.packages, *plan.local_files]),
        (META_ADDED, "as", [c.nevra.nevra for c in plan.added]),
        (META_UPDATED, "a(ss)", [(old.nevra, new.nevra.nevra) for old, new in plan.updated]),
    ]
    version = sysroot.commit_version(source.csum)
    if version:
        metadata.append((META_SOURCE_VERSION, "s", version))
    return metadata


def local_trees(repo: Repo) -> list[LocalTree]:
    """The trees under local/ in a repository, with what each adds over the deployment it came from."""
    trees = []
    for ref, commit in sorted(repo.list_refs(LOCAL_REF_PREFIX.rstrip("/"), remotes=False).items()):
        if not ref.startswith(LOCAL_REF_PREFIX):
            continue
        loaded = repo.load_commit(commit)
        trees.append(LocalTree(
            ref, commit, loaded.version, _text(loaded.meta(META_SOURCE_CHECKSUM)),
            _text(loaded.meta(META_SOURCE_REFSPEC)), _text(loaded.meta(META_SOURCE_VERSION)),
            _texts(loaded.meta(META_REQUESTED)), _texts(loaded.meta(META_ADDED)),
            _pairs(loaded.meta(META_UPDATED))))
    return trees


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _pairs(value: object) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    return [(str(item[0]), str(item[1])) for item in value if isinstance(item, tuple | list) and len(item) == 2]
