"""`compose tree`: from a treefile and rpm-md repositories to one commit (spec F.3)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata import bwrap, fsroot, progress
from strata.core import composepasswd, layout
from strata.core.assemble import merge_package_trees, run_package_scripts
from strata.core.composetest import parse_test_command, run_compose_tests
from strata.core.lockfile import load_lockfiles, write_lockfile
from strata.core.packagefilter import PackageFilter, filter_package
from strata.core.treefile import Treefile, host_basearch, load_treefile
from strata.core.version import next_version
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image import gpg, gvariant, summary
from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.commit import (
    CommitRequest,
    MutableTree,
    TreeWriteOptions,
    write_commit,
    write_mutable_tree,
    write_tree_from_dir,
)
from strata.image.fsutil import atomic_write
from strata.image.gvariant import Variant
from strata.image.objects import ObjectType, vardict
from strata.image.repo import Repo, RepoMode
from strata.image.transfer import copy_commit
from strata.packages import pkgcache as cache
from strata.packages import rpmdb, scripts
from strata.packages.importer import ImportOptions, import_package
from strata.packages.nevra import Nevra
from strata.packages.rpmread import RpmHeader, RpmPackage
from strata.packages.solver import Candidate, Restrictions
from strata.packages.sources import RepositorySet, open_repositories
from strata.units import human_size

Log = Callable[[str], None]
PKGCACHE_REPO = "pkgcache-repo"


@dataclass
class ComposeOptions:
    repo: Path
    cachedir: Path | None = None
    dry_run: bool = False
    force_nocache: bool = False
    add_metadata: list[tuple[str, str]] = field(default_factory=list)
    parent: str | None = None
    no_parent: bool = False
    write_commitid_to: Path | None = None
    previous_inputhash: str | None = None
    previous_version: str | None = None
    lockfiles: list[Path] = field(default_factory=list)
    lockfile_strict: bool = False
    write_lockfile_to: Path | None = None
    previous_commit: str | None = None  # change detection, versions and accounts compare against it
    layer_repo: Path | None = None  # where ostree-layers refs are (default: the target repository)
    touch_if_changed: Path | None = None
    add_metadata_from_json: list[Path] = field(default_factory=list)
    download_only: bool = False
    cache_only: bool = False
    workdir: Path | None = None
    tests: list[str] = field(default_factory=list)  # --test: commands run in the booted commit before the ref moves
    extra_metadata: list[tuple[str, str, object]] = field(default_factory=list)  # typed commit metadata


@dataclass
class ComposeResult:
    ref: str
    commit: str | None  # None when nothing changed or a dry run
    version: str | None
    packages: list[Nevra]
    inputhash: str
    imported: list[str] = field(default_factory=list)


@dataclass
class ComposePlan:
    """Everything decided before the tree is built: the treefile, the repositories and the solved set."""

    treefile: Treefile
    repo: Repo
    previous: str | None
    cachedir: Path
    sources: RepositorySet
    solution: list[Candidate]
    inputhash: str
    version: str | None = None
    parent: str | None = None
    prepared: dict[str, str] = field(default_factory=dict)  # NEVRA -> package commit already in the cache


@dataclass
class BuildState:
    """What `compose install` leaves beside the rootfs for `compose commit` (rpm-ostree reads the rpmdb
    and the repositories again; strata keeps what it already knows)."""

    inputhash: str
    version: str | None
    pkglist: list[tuple[str, str, str, str, str]]
    repo_timestamps: dict[str, int]

    def save(self, path: Path) -> None:
        data = {"inputhash": self.inputhash, "version": self.version, "pkglist": self.pkglist,
                "repo-timestamps": self.repo_timestamps}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> BuildState:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["inputhash"]), data["version"], [tuple(e) for e in data["pkglist"]],
                       {str(k): int(v) for k, v in data["repo-timestamps"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{path}: not a strata compose state file ({type(exc).__name__})") from None


STATE_FILE = "strata-compose.json"


def compose_tree(treefile_path: Path, options: ComposeOptions, log: Log) -> ComposeResult:
    """rpm-ostree's `compose tree`: install, postprocess and commit in one run."""
    for text in options.tests:
        parse_test_command(text)
    plan = plan_compose(treefile_path, options, log)
    result = ComposeResult(plan.treefile.ref or "", None, None, [p.nevra for p in plan.solution], plan.inputhash)
    if _unchanged(plan.repo, plan.previous, plan.inputhash, options, log):
        return result
    if options.dry_run:
        touch = f", updating --touch-if-changed={options.touch_if_changed}" if options.touch_if_changed else ""
        log(f"--dry-run complete{touch}; exiting")
        _touch(options.touch_if_changed)
        return result
    pkgcache = Repo.init(plan.cachedir / PKGCACHE_REPO, RepoMode.BARE)
    if options.download_only:
        _import_all(pkgcache, plan.sources, plan.solution, plan.cachedir, plan.treefile, log, result)
        return result
    result.commit, result.version = build_and_commit(plan, pkgcache, options, log, result), plan.version
    _touch(options.touch_if_changed)
    return result


def build_and_commit(plan: ComposePlan, pkgcache: Repo, options: ComposeOptions, log: Log,
                     result: ComposeResult) -> str:
    """Install, postprocess and commit a planned tree; with --test commands the ref moves only after they
    passed inside the booted commit."""
    with tempfile.TemporaryDirectory(prefix="compose-", dir=options.workdir or pkgcache.tmp_dir) as work:
        rootfs = Path(work) / "rootfs"
        install_root(plan, pkgcache, rootfs, options, log, result)
        postprocess_root(rootfs, plan.treefile, log)
        state = BuildState(plan.inputhash, plan.version, sorted(p.nevra.pkglist_entry() for p in plan.solution),
                           plan.sources.repo_timestamps())
        # held until the ref names the commit: a prune (exclusive) cannot take it while the tests run
        with plan.repo.lock():
            commit = commit_root(plan.repo, rootfs, plan.treefile, state, plan.previous, options, log,
                                 parent=plan.parent)
            if options.tests:
                fsroot.remove_tree(rootfs)  # room for the scratch sysroot
                run_compose_tests(plan.repo, commit, options.tests, log)
                publish_commit(plan.repo, commit, plan.treefile.ref, options, log, update_summary=True)
    return commit


def _touch(path: Path | None) -> None:
    """--touch-if-changed: the file's mtime moves (it is created when missing) when there is a new tree."""
    if path is not None:
        path.touch()
        os.utime(path)


def compose_install(treefile_path: Path, destdir: Path, options: ComposeOptions, log: Log, *,
                    postprocess: bool = False) -> ComposeResult:
    """rpm-ostree's `compose install`: DESTDIR/rootfs holds the installed tree (treefile postprocessing
    done; with postprocess=True also the final layout), built aside and renamed into place."""
    if options.workdir is not None:
        raise InvalidInputError("--workdir is ignored with install-root")
    final = destdir / "rootfs"
    if final.exists() or final.is_symlink():
        raise InvalidInputError(f"{final} already exists")
    plan = plan_compose(treefile_path, options, log)
    result = ComposeResult(plan.treefile.ref or "", None, plan.version, [p.nevra for p in plan.solution],
                           plan.inputhash)
    if _unchanged(plan.repo, plan.previous, plan.inputhash, options, log):
        return result
    if options.dry_run:
        log("--dry-run complete; exiting")
        return result
    pkgcache = Repo.init(plan.cachedir / PKGCACHE_REPO, RepoMode.BARE)
    if options.download_only:
        _import_all(pkgcache, plan.sources, plan.solution, plan.cachedir, plan.treefile, log, result)
        return result
    destdir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=destdir))
    try:
        install_root(plan, pkgcache, partial / "rootfs", options, log, result)
        if postprocess:
            postprocess_root(partial / "rootfs", plan.treefile, log)
        BuildState(plan.inputhash, plan.version, sorted(p.nevra.pkglist_entry() for p in plan.solution),
                   plan.sources.repo_timestamps()).save(destdir / STATE_FILE)
        os.rename(partial / "rootfs", final)
    finally:
        fsroot.remove_tree(partial)
    log(f"rootfs: {final}")
    _touch(options.touch_if_changed)
    return result


def compose_postprocess(rootfs: Path, treefile_path: Path | None, log: Log) -> None:
    """rpm-ostree's `compose postprocess`: the final OSTree layout of an installed root, in place."""
    if not rootfs.is_dir() or rootfs.is_symlink():
        raise InvalidInputError(f"{rootfs} is not a directory")
    treefile = load_treefile(treefile_path) if treefile_path is not None else empty_treefile(rootfs)
    postprocess_root(rootfs, treefile, log)


def compose_commit(treefile_path: Path, rootfs: Path, options: ComposeOptions, log: Log) -> ComposeResult:
    """rpm-ostree's `compose commit`: a postprocessed root committed to the repository."""
    treefile = load_treefile(treefile_path)
    if not treefile.ref and options.write_commitid_to is None:
        raise InvalidInputError("treefile has no 'ref'")
    if not rootfs.is_dir() or rootfs.is_symlink():
        raise InvalidInputError(f"{rootfs} is not a directory")
    repo = Repo.open(options.repo)
    parent = _previous_commit(repo, treefile.ref, options)
    previous = repo.resolve_rev(options.previous_commit) if options.previous_commit else parent
    state_path = rootfs.parent / STATE_FILE
    if state_path.exists():
        state = BuildState.load(state_path)
    else:
        state = BuildState("", _version(treefile, repo, previous, options), _rpmdb_pkglist(rootfs), {})
    commit = commit_root(repo, rootfs, treefile, state, previous, options, log, parent=parent)
    packages = [Nevra.from_pkglist_entry(entry) for entry in state.pkglist]
    return ComposeResult(treefile.ref or "", commit, state.version, packages, state.inputhash)


def empty_treefile(rootfs: Path) -> Treefile:
    return Treefile(rootfs / "treefile.json", {}, host_basearch())


def plan_compose(treefile_path: Path, options: ComposeOptions, log: Log) -> ComposePlan:
    treefile = load_treefile(treefile_path)
    ref = treefile.ref
    if not ref and options.write_commitid_to is None:
        raise InvalidInputError("treefile has no 'ref'")
    repo = Repo.open(options.repo)
    parent = _previous_commit(repo, ref, options)
    previous = repo.resolve_rev(options.previous_commit) if options.previous_commit else parent
    log(f"Previous commit: {previous}" if previous else f"No previous commit for {ref}")
    if options.download_only and options.cachedir is None:
        raise InvalidInputError("--download-only can only be used with --cachedir")
    cachedir = options.cachedir or repo.path / "extensions" / "strata" / "compose-cache"
    cachedir.mkdir(parents=True, exist_ok=True)
    locked = load_lockfiles(options.lockfiles)
    lockfile_repos = list(treefile.get("lockfile-repos") or []) if locked else []
    sources = open_repositories(treefile.directory, treefile.repos, cachedir / "rpmmd", log,
                                repo_variables(treefile), extra=lockfile_repos, cache_only=options.cache_only)
    restrictions = Restrictions(
        repo_packages=[(pkg, entry["repo"]) for entry in treefile.get("repo-packages") or []
                       for pkg in entry["packages"]],
        locked=locked, lockfile_repos=frozenset(lockfile_repos), strict=options.lockfile_strict)
    requests = treefile.packages + [request for request, _repo in restrictions.repo_packages]
    solution = sources.solve(requests, exclude=treefile.exclude_packages, recommends=treefile.recommends,
                             restrictions=restrictions)
    log(f"Installing {len(solution)} packages:")
    for pkg in solution:
        log(f"  {pkg.nevra.nevra} ({pkg.repo_id})")
    if options.write_lockfile_to is not None:
        write_lockfile(options.write_lockfile_to, solution, sources.repo_timestamps())
        log(f"Wrote lockfile to {options.write_lockfile_to}")
    layers = _layer_commits(_layer_repo(repo, options), treefile)
    inputhash = input_hash(treefile, solution, layers)
    log(f"Input state hash: {inputhash}")
    version = _version(treefile, repo, previous, options)
    return ComposePlan(treefile, repo, previous, cachedir, sources, solution, inputhash, version, parent)


def _layer_repo(repo: Repo, options: ComposeOptions) -> Repo:
    return Repo.open(options.layer_repo) if options.layer_repo is not None else repo


def repo_variables(treefile: Treefile) -> dict[str, str]:
    """$basearch, $releasever and the treefile's repovars, for the .repo files."""
    variables = {"basearch": treefile.basearch, **{k: str(v) for k, v in (treefile.get("repovars") or {}).items()}}
    if treefile.get("releasever") is not None:
        variables["releasever"] = str(treefile.get("releasever"))
    return variables


def install_root(plan: ComposePlan, pkgcache: Repo, rootfs: Path, options: ComposeOptions, log: Log,
                 result: ComposeResult) -> None:
    """Packages (filtered), ostree layers, accounts, scripts, rpmdb, then the treefile's own changes."""
    treefile = plan.treefile
    commits = _import_all(pkgcache, plan.sources, plan.solution, plan.cachedir, treefile, log, result,
                          prepared=plan.prepared)
    headers = {p.nevra.nevra: cache.header_of(pkgcache, commits[p.nevra.nevra]) for p in plan.solution}
    rules = PackageFilter.from_treefile(list(treefile.get("remove-from-packages") or []),
                                        treefile.get("install-langs"))
    if rules.active:
        with pkgcache.lock():
            commits = {nevra: filter_package(pkgcache, commit, headers[nevra], rules, log)
                       for nevra, commit in commits.items()}
    _assemble(pkgcache, _layer_repo(plan.repo, options), treefile, plan.solution, commits, rootfs, log)
    composepasswd.preserve_accounts(rootfs, treefile, plan.repo, plan.previous, log)
    _run_package_scripts([headers[p.nevra.nevra] for p in plan.solution], rootfs, treefile, log)
    _treefile_changes(rootfs, treefile, plan.version, log)


def postprocess_root(rootfs: Path, treefile: Treefile, log: Log) -> None:
    """The final layout: accounts split, /var to tmpfiles, top-level links, kernel placement."""
    layout.split_passwd_and_group(rootfs, list(treefile.get("etc-group-members") or []), log)
    layout.finalize_layout(rootfs, treefile, log)
    if treefile.get("ignore-devices", True):
        layout.remove_device_nodes(rootfs, log)
    if not treefile.get("container", False):
        kernel = _check_kernel(rootfs, require_initramfs=not treefile.get("no-initramfs", False))
        if str(treefile.get("boot-location", "new")) == "new":
            layout.copy_kernel_to_ostree_boot(rootfs, kernel, log)


def _previous_commit(repo: Repo, ref: str | None, options: ComposeOptions) -> str | None:
    if options.no_parent:
        return None
    if options.parent:
        return repo.resolve_rev(options.parent)
    return repo.read_ref(ref) if ref else None


def input_hash(treefile: Treefile, solution: list[Candidate], layers: list[tuple[str, str]] | None = None) -> str:
    """SHA-256 over everything that goes into the tree (spec F.3 step 4)."""
    digest = hashlib.sha256(treefile.canonical_bytes())
    for path in _external_inputs(treefile):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for pkg in solution:
        digest.update(f"install {pkg.nevra.nevra} {pkg.checksum_text}\n".encode())
    for ref, commit in layers or []:
        digest.update(f"layer {ref} {commit}\n".encode())
    return digest.hexdigest()


def _external_inputs(treefile: Treefile) -> list[Path]:
    paths = [treefile.directory / src for src, _dest in treefile.get("add-files") or []]
    script = treefile.get("postprocess-script")
    if script:
        paths.append(treefile.directory / script)
    for key in ("check-passwd", "check-groups"):
        spec = treefile.get(key) or {}
        if isinstance(spec, dict) and spec.get("type") == "file" and spec.get("filename"):
            paths.append(treefile.directory / spec["filename"])
    return paths


def _unchanged(repo: Repo, previous: str | None, inputhash: str, options: ComposeOptions, log: Log) -> bool:
    if options.force_nocache:
        return False
    before = options.previous_inputhash
    if before is None and previous is not None:
        before = repo.load_commit(previous).meta("rpmostree.inputhash")
        if before is None:
            log("Previous commit found, but without rpmostree.inputhash metadata key")
    if before != inputhash:
        return False
    log("No apparent changes since previous commit" + (
        "." if options.dry_run else "; use --force-nocache to override"))
    return True


def _import_all(pkgcache: Repo, sources: RepositorySet, solution: list[Candidate],
                cachedir: Path, treefile: Treefile, log: Log, result: ComposeResult, *,
                prepared: dict[str, str] | None = None) -> dict[str, str]:
    """Reuse cached package commits whose repodata checksum matches; download and import the rest."""
    commits: dict[str, str] = dict(prepared or {})
    missing = []
    for pkg in solution:
        if pkg.nevra.nevra in commits:
            continue
        cached = cache.cached_commit(pkgcache, pkg.nevra, pkg.checksum_text, nodocs=not treefile.documentation)
        if cached:
            commits[pkg.nevra.nevra] = cached
        else:
            missing.append(pkg)
    if not missing:
        return commits
    total = sum(p.size for p in missing)
    log(f"Will download: {len(missing)} package{'s' if len(missing) != 1 else ''} ({human_size(total)})")
    downloads = cachedir / "downloads"
    downloads.mkdir(exist_ok=True)
    paths = sources.download(missing, downloads, log)
    with pkgcache.lock(), progress.items("Importing packages", len(missing)) as bar:
        for pkg in missing:
            options = ImportOptions(repodata_checksum=pkg.checksum_text, repo_id=pkg.repo_id,
                                    repo_timestamp=sources.repo_timestamps().get(pkg.repo_id),
                                    nodocs=not treefile.documentation)
            path = paths[pkg.nevra.nevra]
            commits[pkg.nevra.nevra] = import_package(pkgcache, RpmPackage.open(path), options)
            result.imported.append(pkg.nevra.nevra)
            bar.advance(nbytes=path.stat().st_size)
        pkgcache.sync()
    for path in paths.values():
        path.unlink(missing_ok=True)
    return commits


def _layer_commits(repo: Repo, treefile: Treefile) -> list[tuple[str, str]]:
    """(ref, commit) of ostree-layers then ostree-override-layers, resolved in the target repository."""
    layers = []
    for ref in [*(treefile.get("ostree-layers") or []), *(treefile.get("ostree-override-layers") or [])]:
        try:
            commit = repo.resolve_rev(ref)
        except StrataError as exc:
            raise NotFoundError(f"ostree layer '{ref}' not found in {repo.path}: {exc}") from None
        if commit is None:
            raise NotFoundError(f"ostree layer '{ref}' not found in {repo.path}")
        layers.append((ref, commit))
    return layers


def _assemble(pkgcache: Repo, repo: Repo, treefile: Treefile, solution: list[Candidate], commits: dict[str, str],
              rootfs: Path, log: Log) -> None:
    """Packages, then ostree-layers (a file differing from a package's is a conflict), then
    ostree-override-layers (their files win), merged in one tree and checked out once."""
    parts = [(p.nevra.name, commits[p.nevra.nevra]) for p in solution]
    overriding = set(treefile.get("ostree-override-layers") or [])
    layers = _layer_commits(repo, treefile)
    with pkgcache.lock():
        for ref, commit in layers:
            log(f"Checking out ostree layer {ref}")
            copy_commit(repo, pkgcache, commit)
    parts += [(f"ostree layer {ref}", commit) for ref, commit in layers]
    replaced = frozenset(f"ostree layer {ref}" for ref, _commit in layers if ref in overriding)
    with progress.task("Merging packages"):
        tree = merge_package_trees(pkgcache, parts, replace_files=replaced)
        with pkgcache.lock():
            root = write_mutable_tree(pkgcache, tree)
    with progress.items("Checking out packages", _file_count(tree)) as bar:
        checkout_tree(pkgcache, root, rootfs, CheckoutOptions(files_done=lambda count: bar.advance(count)))


def _file_count(tree: MutableTree) -> int:
    count, todo = 0, [tree]
    while todo:
        node = todo.pop()
        count += len(node.files)
        todo.extend(node.dirs.values())
    return count


def _run_package_scripts(headers: list[RpmHeader], rootfs: Path, treefile: Treefile, log: Log) -> None:
    run_package_scripts(rootfs, headers, log)
    _write_rpmdb(rootfs, headers, log)
    if _runs_sysusers(rootfs, str(treefile.get("sysusers", "compose-auto"))):
        layout.run_sysusers(rootfs, log)


def _write_rpmdb(rootfs: Path, headers: list[RpmHeader], log: Log) -> None:
    found = fsroot.lstat_in_tree(rootfs, rpmdb.RPMDB_DIR)  # a package's symlink there would lead to the host
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise StrataError(f"/{rpmdb.RPMDB_DIR} in the tree is not a directory")
    with progress.task("Writing rpmdb"):
        rpmdb.write_rpmdb_from_headers(rootfs, [h.raw for h in headers])


def _runs_sysusers(rootfs: Path, mode: str) -> bool:
    """compose-auto runs systemd-sysusers only when the tree's rpm defines %__systemd_sysusers."""
    return mode == "compose-forced" or layout.defines_rpm_macro(rootfs, "__systemd_sysusers")


def _version(treefile: Treefile, repo: Repo, previous: str | None, options: ComposeOptions) -> str | None:
    for key, value in options.add_metadata:
        if key == "version":
            return value
    prefix = treefile.get("automatic-version-prefix")
    if not prefix:
        return None
    last = options.previous_version
    if last is None and previous is not None:
        last = repo.load_commit(previous).version
    return next_version(str(prefix), last, suffix=str(treefile.get("automatic-version-suffix", ".")))


def _treefile_changes(rootfs: Path, treefile: Treefile, version: str | None, log: Log) -> None:
    """The treefile's own edits of the installed tree, before the final layout (rpm-ostree's
    compose_postprocess): units, default target, os-release, removed and added files, scripts."""
    if treefile.get("units"):
        layout.enable_units(rootfs, list(treefile.get("units")), log)
    if treefile.get("default-target"):
        layout.set_default_target(rootfs, str(treefile.get("default-target")))
    if treefile.get("mutate-os-release"):
        layout.mutate_os_release(rootfs, str(treefile.get("mutate-os-release")), version, log)
    if treefile.get("remove-files"):
        layout.remove_files(rootfs, list(treefile.get("remove-files")), log)
    if treefile.get("add-files"):
        layout.add_files(rootfs, treefile.directory, list(treefile.get("add-files")), log)
    _run_postprocess_scripts(rootfs, treefile, log)
    if treefile.get("units"):  # checked once add-files and scripts had their chance to ship them
        layout.check_units_shipped(rootfs, list(treefile.get("units")))


def _run_postprocess_scripts(rootfs: Path, treefile: Treefile, log: Log) -> None:
    """Postprocess scripts run in the same sandbox as package scripts (overlay, no network, time limit)."""
    inline = list(treefile.get("postprocess") or [])
    script_path = treefile.get("postprocess-script")
    if not inline and not script_path:
        return
    box = scripts.sandbox_for(rootfs)
    for index, body in enumerate(inline):
        log(f">>>> Executing `postprocess` inline script '{index}' <<<<")
        _run_box_script(box, body, f"postprocess-inline-{index}", log)
    if inline:
        log("Completed running `postprocess` inline scripts")
    if script_path:
        source = treefile.directory / str(script_path)
        if not os.access(source, os.X_OK):
            raise InvalidInputError("postprocess-script must be executable")
        log("Executing postprocessing script")
        _run_box_script(box, source.read_text(), "postprocess-script", log)
        log("Finished postprocessing script")


def _run_box_script(box: bwrap.Sandbox, body: str, label: str, log: Log) -> None:
    interpreter = "/bin/sh"
    if body.startswith("#!"):
        interpreter = body.splitlines()[0][2:].strip().split()[0]
    scripts.run_in_sandbox(box, [interpreter], body, [], label, log)


def _check_kernel(rootfs: Path, *, require_initramfs: bool = True) -> str:
    """The one kernel of the tree, found as deploy will find it (symlinks resolved inside the tree)."""
    modules = fsroot.real_path_in_root(rootfs, "usr/lib/modules")
    names = sorted(os.listdir(modules)) if modules is not None and modules.is_dir() else []
    found = [name for name in names if fsroot.is_file_in_root(rootfs, f"usr/lib/modules/{name}/vmlinuz")]
    if not found:
        raise StrataError("no kernel found: the tree has no usr/lib/modules/VERSION/vmlinuz")
    if len(found) > 1:
        raise StrataError(f"multiple kernels found: {', '.join(found)}")
    if require_initramfs and not fsroot.is_file_in_root(rootfs, f"usr/lib/modules/{found[0]}/initramfs.img"):
        raise StrataError(f"kernel {found[0]} has no initramfs.img")
    return found[0]


def commit_root(repo: Repo, rootfs: Path, treefile: Treefile, state: BuildState, previous: str | None,
                options: ComposeOptions, log: Log, *, parent: str | None) -> str:
    """Check accounts, write the commit (signed with gpg-key), move the ref or write the commit id."""
    composepasswd.check_accounts(rootfs, treefile, repo, previous, log)
    metadata = _commit_metadata(rootfs, treefile, state, options)
    write_options = TreeWriteOptions(mode_ro_executables=bool(treefile.get("readonly-executables", False)))
    with progress.task("Committing"), repo.lock():
        root = write_tree_from_dir(repo, rootfs, write_options)
        request = CommitRequest(metadata=metadata, parent=parent, bind_refs=[treefile.ref] if treefile.ref else [])
        commit = write_commit(repo, root, request)
        _detached_metadata(repo, commit, treefile, state)
        repo.sync()
    if options.tests:
        log(f"Wrote commit: {commit} (the ref moves once the tests pass)")
    else:
        publish_commit(repo, commit, treefile.ref, options, log)
    return commit


def publish_commit(repo: Repo, commit: str, ref: str | None, options: ComposeOptions, log: Log, *,
                   update_summary: bool = False) -> None:
    """Move the ref (or write the commit id); update_summary regenerates a summary the repository has."""
    if options.write_commitid_to is not None:
        atomic_write(options.write_commitid_to, commit.encode(), fsync=False)
        log(f"Wrote commit: {commit}")
        return
    if not ref:
        return
    with repo.lock():
        repo.set_ref(ref, commit)
    log(f"{ref} => {commit}")
    if update_summary and (repo.path / "summary").exists():
        summary.update_summary(repo)
        log("Updated the repository summary")


def _commit_metadata(rootfs: Path, treefile: Treefile, state: BuildState,
                     options: ComposeOptions) -> list[tuple[str, str, object]]:
    metadata: list[tuple[str, str, object]] = []
    if state.version is not None:
        metadata.append(("version", "s", state.version))
    from_json = _metadata_from_json(options.add_metadata_from_json)
    overridden = {k for k, _ in options.add_metadata} | set(from_json)
    for key, value in (treefile.get("add-commit-metadata") or {}).items():
        if key not in overridden:
            metadata.append((key, *_json_to_variant(value)))
    metadata += [(k, *_json_to_variant(v)) for k, v in from_json.items() if k not in dict(options.add_metadata)]
    metadata += [(k, "s", v) for k, v in options.add_metadata if k != "version"]
    metadata += options.extra_metadata
    if state.inputhash:
        metadata.append(("rpmostree.inputhash", "s", state.inputhash))
    metadata += [
        ("rpmostree.rpmdb.pkglist", "a(sssss)", sorted(state.pkglist)),
        ("rpmostree.initramfs-args", "as", list(treefile.get("initramfs-args") or [])),
    ]
    if treefile.get("repo-metadata", "inline") == "inline":
        metadata.append(("rpmostree.rpmmd-repos", "aa{sv}", repos_metadata(state.repo_timestamps)))
    if treefile.get("container-cmd"):
        metadata.append(("ostree.container-cmd", "as", list(treefile.get("container-cmd"))))
    if not treefile.get("container", False):
        kernel = _check_kernel(rootfs, require_initramfs=not treefile.get("no-initramfs", False))
        metadata += [("ostree.bootable", "b", True), ("ostree.linux", "s", kernel)]
    return metadata


def _metadata_from_json(paths: list[Path]) -> dict[str, object]:
    """--add-metadata-from-json: JSON objects whose members become commit metadata (later files win)."""
    merged: dict[str, object] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f"--add-metadata-from-json: {path}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"--add-metadata-from-json: {path}: not a JSON object")
        merged.update(data)
    return merged


def _detached_metadata(repo: Repo, commit: str, treefile: Treefile, state: BuildState) -> None:
    entries: list[tuple[str, str, object]] = []
    if treefile.get("repo-metadata") == "detached":
        entries.append(("rpmostree.rpmmd-repos", "aa{sv}", repos_metadata(state.repo_timestamps)))
    detached = gvariant.encode("a{sv}", vardict(entries)) if entries else None
    if treefile.get("gpg-key"):
        data = repo.read_metadata(commit, ObjectType.COMMIT)
        detached = gpg.add_signature(detached, gpg.sign(data, str(treefile.get("gpg-key")), None))
    if detached is not None:
        repo.write_detached_metadata(commit, detached)


def repos_metadata(timestamps: dict[str, int]) -> list[list[tuple[str, Variant]]]:
    return [vardict([("id", "s", repo_id), ("timestamp", "t", stamp)])
            for repo_id, stamp in sorted(timestamps.items())]


def _rpmdb_pkglist(rootfs: Path) -> list[tuple[str, str, str, str, str]]:
    """The packages of a root that strata did not install itself, from its rpmdb."""
    text = rpmdb.query(rootfs, "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n")
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 5:
            entries.append((fields[0], fields[1], fields[2], fields[3], fields[4]))
    return sorted(entries)


def _json_to_variant(value: object) -> tuple[str, object]:
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, int):
        return "x", value
    if isinstance(value, str):
        return "s", value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "as", value
    return "s", json.dumps(value)
