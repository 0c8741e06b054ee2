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

from strata import bwrap, fsroot
from strata.core import layout
from strata.core.assemble import merge_package_trees, run_package_scripts
from strata.core.treefile import Treefile, load_treefile
from strata.core.version import next_version
from strata.errors import InvalidInputError, StrataError
from strata.image.checkout import checkout_tree
from strata.image.commit import CommitRequest, TreeWriteOptions, write_commit, write_mutable_tree, write_tree_from_dir
from strata.image.gvariant import Variant
from strata.image.objects import vardict
from strata.image.repo import Repo, RepoMode
from strata.packages import pkgcache as cache
from strata.packages import rpmdb, scripts
from strata.packages.importer import ImportOptions, import_package
from strata.packages.nevra import Nevra
from strata.packages.rpmread import RpmHeader, RpmPackage
from strata.packages.solver import Candidate
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


@dataclass
class ComposeResult:
    ref: str
    commit: str | None  # None when nothing changed or a dry run
    version: str | None
    packages: list[Nevra]
    inputhash: str
    imported: list[str] = field(default_factory=list)


def compose_tree(treefile_path: Path, options: ComposeOptions, log: Log) -> ComposeResult:
    treefile = load_treefile(treefile_path)
    ref = treefile.ref
    if not ref and options.write_commitid_to is None:
        raise InvalidInputError("treefile has no 'ref'")
    repo = Repo.open(options.repo)
    previous = _previous_commit(repo, ref, options)
    log(f"Previous commit: {previous}" if previous else f"No previous commit for {ref}")
    cachedir = options.cachedir or repo.path / "extensions" / "strata" / "compose-cache"
    cachedir.mkdir(parents=True, exist_ok=True)
    sources = open_repositories(treefile.directory, treefile.repos, cachedir / "rpmmd", log)
    solution = sources.solve(treefile.packages, exclude=treefile.exclude_packages, recommends=treefile.recommends)
    log(f"Installing {len(solution)} packages:")
    for pkg in solution:
        log(f"  {pkg.nevra.nevra} ({pkg.repo_id})")
    inputhash = input_hash(treefile, solution)
    log(f"Input state hash: {inputhash}")
    result = ComposeResult(ref or "", None, None, [p.nevra for p in solution], inputhash)
    if _unchanged(repo, previous, inputhash, options, log):
        return result
    if options.dry_run:
        log("--dry-run complete; exiting")
        return result
    pkgcache = Repo.init(cachedir / PKGCACHE_REPO, RepoMode.BARE)
    commits = _import_all(pkgcache, sources, solution, cachedir, treefile, log, result)
    with tempfile.TemporaryDirectory(prefix="compose-", dir=pkgcache.tmp_dir) as work:
        rootfs = Path(work) / "rootfs"
        _assemble(pkgcache, solution, commits, rootfs, log)
        _run_package_scripts(pkgcache, solution, commits, rootfs, log)
        version = _version(treefile, repo, previous, options)
        _postprocess(rootfs, treefile, version, log)
        commit = _commit(repo, rootfs, treefile, solution, sources, inputhash, version, previous, options, log)
    result.commit, result.version = commit, version
    if options.write_commitid_to is not None:
        options.write_commitid_to.write_text(commit)
        log(f"Wrote commit: {commit}")
    else:
        log(f"{ref} => {commit}")
    return result


def _previous_commit(repo: Repo, ref: str | None, options: ComposeOptions) -> str | None:
    if options.no_parent:
        return None
    if options.parent:
        return repo.resolve_rev(options.parent)
    return repo.read_ref(ref) if ref else None


def input_hash(treefile: Treefile, solution: list[Candidate]) -> str:
    """SHA-256 over everything that goes into the tree (spec F.3 step 4)."""
    digest = hashlib.sha256(treefile.canonical_bytes())
    for path in _external_inputs(treefile):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for pkg in solution:
        digest.update(f"install {pkg.nevra.nevra} {pkg.checksum_text}\n".encode())
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
                cachedir: Path, treefile: Treefile, log: Log, result: ComposeResult) -> dict[str, str]:
    """Reuse cached package commits whose repodata checksum matches; download and import the rest."""
    commits: dict[str, str] = {}
    missing = []
    for pkg in solution:
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
    log("Importing packages...")
    with pkgcache.lock():
        for pkg in missing:
            options = ImportOptions(repodata_checksum=pkg.checksum_text, repo_id=pkg.repo_id,
                                    repo_timestamp=sources.repo_timestamps().get(pkg.repo_id),
                                    nodocs=not treefile.documentation)
            commits[pkg.nevra.nevra] = import_package(pkgcache, RpmPackage.open(paths[pkg.nevra.nevra]), options)
            result.imported.append(pkg.nevra.nevra)
        pkgcache.sync()
    for path in paths.values():
        path.unlink(missing_ok=True)
    log("Importing packages... done")
    return commits


def _assemble(pkgcache: Repo, solution: list[Candidate], commits: dict[str, str],
              rootfs: Path, log: Log) -> None:
    log("Checking out packages...")
    tree = merge_package_trees(pkgcache, [(p.nevra.name, commits[p.nevra.nevra]) for p in solution])
    with pkgcache.lock():
        root = write_mutable_tree(pkgcache, tree)
    checkout_tree(pkgcache, root, rootfs)
    log("Checking out packages... done")


def _run_package_scripts(pkgcache: Repo, solution: list[Candidate], commits: dict[str, str],
                         rootfs: Path, log: Log) -> None:
    headers: list[RpmHeader] = [cache.header_of(pkgcache, commits[p.nevra.nevra]) for p in solution]
    run_package_scripts(rootfs, headers, log)
    log("Writing rpmdb...")
    found = fsroot.lstat_in_tree(rootfs, rpmdb.RPMDB_DIR)  # a package's symlink there would lead to the host
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise StrataError(f"/{rpmdb.RPMDB_DIR} in the tree is not a directory")
    rpmdb.write_rpmdb_from_headers(rootfs, [h.raw for h in headers])
    log("Writing rpmdb... done")


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


def _postprocess(rootfs: Path, treefile: Treefile, version: str | None, log: Log) -> None:
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
    layout.split_passwd_and_group(rootfs, list(treefile.get("etc-group-members") or []), log)
    layout.finalize_layout(rootfs, treefile, log)
    _check_kernel(rootfs)


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


def _check_kernel(rootfs: Path) -> str:
    """The one kernel of the tree, found as deploy will find it (symlinks resolved inside the tree)."""
    modules = fsroot.real_path_in_root(rootfs, "usr/lib/modules")
    names = sorted(os.listdir(modules)) if modules is not None and modules.is_dir() else []
    found = [name for name in names if fsroot.is_file_in_root(rootfs, f"usr/lib/modules/{name}/vmlinuz")]
    if not found:
        raise StrataError("no kernel found: the tree has no usr/lib/modules/VERSION/vmlinuz")
    if len(found) > 1:
        raise StrataError(f"multiple kernels found: {', '.join(found)}")
    if not fsroot.is_file_in_root(rootfs, f"usr/lib/modules/{found[0]}/initramfs.img"):
        raise StrataError(f"kernel {found[0]} has no initramfs.img")
    return found[0]


def _commit(repo: Repo, rootfs: Path, treefile: Treefile, solution: list[Candidate], sources: RepositorySet,
            inputhash: str, version: str | None, previous: str | None, options: ComposeOptions, log: Log) -> str:
    log("Committing...")
    kernel = _check_kernel(rootfs)
    metadata: list[tuple[str, str, object]] = []
    if version is not None:
        metadata.append(("version", "s", version))
    for key, value in (treefile.get("add-commit-metadata") or {}).items():
        if key not in {k for k, _ in options.add_metadata}:
            metadata.append((key, *_json_to_variant(value)))
    metadata += [(k, "s", v) for k, v in options.add_metadata if k != "version"]
    metadata += [
        ("rpmostree.inputhash", "s", inputhash),
        ("rpmostree.rpmdb.pkglist", "a(sssss)", sorted(p.nevra.pkglist_entry() for p in solution)),
        ("rpmostree.rpmmd-repos", "aa{sv}", repos_metadata(sources)),
        ("rpmostree.initramfs-args", "as", list(treefile.get("initramfs-args") or [])),
        ("ostree.bootable", "b", True),
        ("ostree.linux", "s", kernel),
    ]
    with repo.lock():
        root = write_tree_from_dir(repo, rootfs, TreeWriteOptions())
        request = CommitRequest(metadata=metadata, parent=previous, bind_refs=[treefile.ref] if treefile.ref else [])
        commit = write_commit(repo, root, request)
        repo.sync()
        if treefile.ref and options.write_commitid_to is None:
            repo.set_ref(treefile.ref, commit)
    log("Committing... done")
    return commit


def repos_metadata(sources: RepositorySet) -> list[list[tuple[str, Variant]]]:
    return [vardict([("id", "s", repo_id), ("timestamp", "t", stamp)])
            for repo_id, stamp in sorted(sources.repo_timestamps().items())]


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

