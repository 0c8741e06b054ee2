"""Client-side assembly (spec E.5): a base commit plus the origin's requests -> a layered commit.

The tree is always rebuilt from the pristine base: base tree, minus removed or replaced packages, plus the
package commits of the layer, merged in memory, checked out once by hardlinks, scripts run, rpmdb updated,
committed with the base as parent."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata import fsroot, progress
from strata.core import layout
from strata.core.assemble import LazyTree, merge_package_trees, run_package_scripts, write_edited_tree
from strata.core.origin import Origin
from strata.errors import NotFoundError, StrataError
from strata.image import inspect
from strata.image import objects as O
from strata.image.checkout import CheckoutOptions, checkout_tree
from strata.image.commit import CommitRequest, MutableTree, write_commit, write_tree_from_dir
from strata.image.fsutil import atomic_write
from strata.image.gvariant import Variant
from strata.image.objects import Commit, FileMeta, ObjectType
from strata.image.repo import Repo
from strata.packages import pkgcache as cache
from strata.packages import rpmdb
from strata.packages.importer import ImportOptions, import_package, translate_path
from strata.packages.nevra import Nevra
from strata.packages.rpmread import RpmHeader, RpmPackage
from strata.packages.solver import Candidate, InstalledPackage
from strata.packages.sources import RepositorySet, open_repositories
from strata.units import human_size

Log = Callable[[str], None]
CLIENTLAYER_VERSION = 6
_ACCOUNTS_LIMIT = 16 * 1024 * 1024
_BASE_CACHE_FORMAT = 1
_BASE_CACHE_LIMIT = 256 * 1024 * 1024
# The file paths other packages depend on in practice (rpm-md's primary lists exactly these).
_FILE_DEP_PATH = re.compile(r"^F\t(/etc/|.*/s?bin/|/usr/lib/sendmail$)")


@dataclass
class LayerPlan:
    """What the layer will be, decided before anything is written."""

    install: list[Candidate] = field(default_factory=list)  # from repos
    local: list[tuple[Nevra, str]] = field(default_factory=list)  # local RPMs layered: (nevra, package commit)
    replacements: list[tuple[Nevra, str, Nevra]] = field(default_factory=list)  # (new, its commit, old base pkg)
    removals: list[Nevra] = field(default_factory=list)
    active_requests: list[str] = field(default_factory=list)
    inactive_requests: list[tuple[str, list[Nevra]]] = field(default_factory=list)
    inactive_removals: list[str] = field(default_factory=list)


@dataclass
class BaseInfo:
    commit: str
    packages: list[InstalledPackage]

    @property
    def nevras(self) -> list[Nevra]:
        return [p.nevra for p in self.packages]

    def find(self, name: str) -> list[Nevra]:
        return [p.nevra for p in self.packages if p.nevra.name == name]


_BASES_READ: dict[tuple[Path, str], BaseInfo] = {}  # a commit never changes: read once per process


def read_base(repo: Repo, base_commit: str, workdir: Path) -> BaseInfo:
    """The base's packages with what they provide, read from its rpmdb by the real rpm."""
    key = (repo.path, base_commit)
    if key not in _BASES_READ:
        if len(_BASES_READ) >= 4:  # a long-running service sees a few bases at a time
            del _BASES_READ[next(iter(_BASES_READ))]
        cached = _cached_base(repo, base_commit)
        if cached is None:
            cached = _read_base(repo, base_commit, workdir)
            _cache_base(repo, cached)
        _BASES_READ[key] = cached
    return _BASES_READ[key]


def _base_cache_path(repo: Repo, base_commit: str) -> Path:
    return repo.path / "extensions" / "strata" / "cache" / "base-packages" / f"{base_commit}.json"


def _cached_base(repo: Repo, base_commit: str) -> BaseInfo | None:
    """What _read_base found for this commit before (a commit never changes); None when absent or unreadable."""
    path = _base_cache_path(repo, base_commit)
    try:
        if path.stat().st_size > _BASE_CACHE_LIMIT:
            return None
        data = json.loads(path.read_bytes())
        packages = [InstalledPackage(Nevra(name, int(epoch), version, release, arch), tuple(provides), tuple(files))
                    for name, epoch, version, release, arch, provides, files in data["packages"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("format") != _BASE_CACHE_FORMAT or not all(
            isinstance(text, str) for p in packages for text in (*p.provides, *p.files)):
        return None
    return BaseInfo(base_commit, packages)


def _cache_base(repo: Repo, info: BaseInfo) -> None:
    path = _base_cache_path(repo, info.commit)
    entries = [[p.nevra.name, p.nevra.epoch, p.nevra.version, p.nevra.release, p.nevra.arch, list(p.provides),
                list(p.files)] for p in info.packages]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"format": _BASE_CACHE_FORMAT, "packages": entries}).encode(), fsync=False)
        _drop_stale_base_caches(repo, path.parent)
    except OSError:
        pass  # a cache: a read-only repository only means reading the rpmdb again next time


def _drop_stale_base_caches(repo: Repo, directory: Path) -> None:
    """Entries of base commits the repository no longer holds (pruned after an upgrade): one per base would
    otherwise pile up for ever, a few megabytes each."""
    for entry in directory.glob("*.json"):
        commit = entry.name.removesuffix(".json")
        if not (O.is_checksum(commit) and repo.has_object(commit, ObjectType.COMMIT)):
            entry.unlink(missing_ok=True)


def _read_base(repo: Repo, base_commit: str, workdir: Path) -> BaseInfo:
    loaded = repo.load_commit(base_commit)
    dbroot = workdir / "basedb"
    (dbroot / "usr" / "share").mkdir(parents=True, exist_ok=True)
    checkout_tree(repo, (loaded.root_tree, loaded.root_meta), dbroot / "usr" / "share" / "rpm",
                  _subpath("usr/share/rpm"))
    out = rpmdb.query(dbroot, "%{NAME}\t%{EPOCHNUM}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n"
                              "[P\t%{PROVIDENEVRS}\n][F\t%{FILENAMES}\n]")
    packages: list[InstalledPackage] = []
    current: tuple[Nevra, list[str], list[str]] | None = None
    for line in out.splitlines():
        if line.startswith(("P\t", "F\t")) and current is not None:
            if line[0] == "P":
                current[1].append(line[2:])
            elif _FILE_DEP_PATH.search(line):
                current[2].append(line[2:])
            continue
        if current is not None:
            packages.append(InstalledPackage(current[0], tuple(current[1]), tuple(current[2])))
        name, epoch, version, release, arch = line.split("\t")
        current = (Nevra(name, int(epoch), version, release, arch), [], [])
    if current is not None:
        packages.append(InstalledPackage(current[0], tuple(current[1]), tuple(current[2])))
    return BaseInfo(base_commit, packages)


def _subpath(path: str) -> CheckoutOptions:
    return CheckoutOptions(subpath=path, force_copy=True)


def plan_layer(repo: Repo, origin: Origin, base: BaseInfo, sources: RepositorySet | None, log: Log) -> LayerPlan:
    plan = LayerPlan()
    solver = sources.solver(base.packages) if sources is not None else None
    for name in origin.override_remove:
        found = base.find(name)
        if found:
            plan.removals += found
        else:
            plan.inactive_removals.append(name)
    for entry in origin.override_replace_local:
        nevra, commit = local_package_commit(repo, entry.sha256, entry.nevra)
        old = base.find(nevra.name)
        if not old or old[0] == nevra:
            continue  # inactive: the package left the base, or the base ships this very build now
        plan.replacements.append((nevra, commit, old[0]))
    for entry in (*origin.requested_local, *origin.requested_local_fileoverride):
        plan.local.append(local_package_commit(repo, entry.sha256, entry.nevra))
    requests = []
    for request in origin.requested:
        provided = solver.installed_providers(request) if solver is not None else _base_provides(base, request)
        if provided:
            plan.inactive_requests.append((request, provided))
        else:
            requests.append(request)
    if plan.inactive_requests:
        log("Inactive requests:")
        for request, providers in plan.inactive_requests:
            log(f"  {request} (already provided by {' '.join(p.nevra for p in providers)})")
    if requests:
        if solver is None:
            raise StrataError("No enabled rpm-md repositories to install packages from")
        erase = [n.name for n in plan.removals] + [old.name for _new, _commit, old in plan.replacements]
        solution = solver.resolve(requests, remove=erase)
        base_names = {p.name for p in base.nevras}
        changed = [c for c in solution.install if c.nevra.name in base_names and c.nevra not in base.nevras]
        if changed:
            raise StrataError("Some base packages would be replaced: " + ", ".join(c.nevra.nevra for c in changed))
        plan.install = [c for c in solution.install if c.nevra not in base.nevras]
        unexpected = [n for n in solution.erase if n.name not in erase]
        if unexpected:
            raise StrataError(f"Base packages would be removed: {', '.join(n.nevra for n in unexpected)}")
    plan.active_requests = requests
    return plan


def _base_provides(base: BaseInfo, request: str) -> list[Nevra]:
    return [p.nevra for p in base.packages if request == p.nevra.name or request in p.provides
            or request in p.files]


def state_digest(origin: Origin, plan: LayerPlan) -> str:
    digest = hashlib.sha512()
    digest.update(origin.evolve(pinned=False).serialize().encode())  # pinning is not part of the layer
    # Sorted: the solver's order depends on the order of the requests, the layer does not.
    for line in sorted(f"install {c.nevra.nevra} {c.checksum_text}\n" for c in plan.install):
        digest.update(line.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class PreviousLayer:
    """The layered commit a change starts from (the merge deployment's) and the origin it was built for."""

    commit: str
    origin: Origin


@dataclass(frozen=True)
class _Start:
    """Where assembly starts: the base, or a previous layered commit whose packages are already in."""

    commit: str
    layered: frozenset[str] = frozenset()  # NEVRAs of the plan already in that commit
    incremental: bool = False


def build_layered_commit(repo: Repo, base: BaseInfo, origin: Origin, plan: LayerPlan, sources: RepositorySet | None,
                         merge_etc: Path | None, cachedir: Path, log: Log, *,
                         previous: PreviousLayer | None = None) -> str:
    """Import, assemble, run scripts, write the rpmdb and commit; returns the layered commit.

    When the change only adds packages to the previous layered commit (same base, same overrides, the
    earlier packages still the same builds), assembly starts from that commit and only the new packages
    are merged and have their scripts run; the result is the commit a rebuild from the base gives."""
    commits = _import_packages(repo, plan, sources, cachedir, log)
    headers = {nevra: cache.header_of(repo, commit) for nevra, commit in commits.items()}
    base_commit = repo.load_commit(base.commit)
    removed_nevras = plan.removals + [old for _new, _commit, old in plan.replacements]
    start = _start_of(repo, base, origin, plan, previous, headers, merge_etc)
    new = [nevra for nevra in commits if nevra not in start.layered]
    new_headers = [headers[nevra] for nevra in new]
    with tempfile.TemporaryDirectory(prefix="layer-", dir=repo.tmp_dir) as work:
        rootfs = Path(work) / "rootfs"
        tree: MutableTree = LazyTree.of_commit(repo, start.commit)
        if start.incremental:
            log(f"Adding to the layered commit {start.commit[:7]}: {len(new)} new of {len(commits)} packages")
        elif removed_nevras:
            _remove_packages(repo, base.commit, tree, removed_nevras, Path(work), log)
        label = "Processing packages" if plan.removals or plan.replacements else "Checking out packages"
        full_checkout = _needs_full_checkout(new_headers)
        with progress.task(label):
            merged = merge_package_trees(repo, [(nevra, commits[nevra]) for nevra in new], base=tree,
                                         replace_files=frozenset(new.nevra for new, _c, _o in plan.replacements),
                                         base_owner=_BaseOwners(repo, start.commit, Path(work)))
            if full_checkout:
                with repo.lock():
                    root = write_edited_tree(repo, merged)
                checkout_tree(repo, root, rootfs)
        epoch = _install_epoch(base_commit.timestamp)
        erase = [n.nevra for n in removed_nevras]
        if full_checkout:
            _run_scripts(rootfs, new_headers, merge_etc, {old.name for _n, _c, old in plan.replacements}, log)
        elif new_headers:
            # Nothing to run and no owners to set: the tree is finished in memory, only the rpmdb is written
            # on disk, so the cost follows the layer, not the size of the base.
            for kind in ("pre", "post", "posttrans"):
                log(f"Running {kind} scripts... done")
        with progress.task("Writing rpmdb"):
            dbdir = _write_rpmdb(repo, base_commit, list(headers.values()), erase, epoch, Path(work))
        with progress.task("Writing OSTree commit"):
            tree = LazyTree(repo, *_write_dir(repo, rootfs)) if full_checkout else merged
            with repo.lock():
                _set_rpmdb(repo, tree, dbdir)
                tree_root = write_edited_tree(repo, tree)
            commit = _commit(repo, tree_root, base, origin, plan, list(headers.values()), removed_nevras)
    return commit


def _install_epoch(base_timestamp: int) -> int:
    """The install time recorded in the rpmdb: $SOURCE_DATE_EPOCH, else the base commit's time, never the
    clock (the same layer always gives the same rpmdb bytes, whichever way it was assembled)."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(text) if text.isdigit() and 0 < int(text) < 2**32 else base_timestamp


def _start_of(repo: Repo, base: BaseInfo, origin: Origin, plan: LayerPlan, previous: PreviousLayer | None,
              headers: dict[str, RpmHeader], merge_etc: Path | None) -> _Start:
    """The previous layered commit when the change only adds packages to it, else the base."""
    if previous is None or previous.commit == base.commit:
        return _Start(base.commit)
    layered = _previous_packages(repo, base, origin, plan, previous)
    if layered is None:
        return _Start(base.commit)
    if any(header.transfiletriggers_in() for header in headers.values()):
        return _Start(base.commit)  # a file trigger of the layer sees every file of the layer at once
    earlier_ran_scripts = _needs_full_checkout([headers[nevra] for nevra in layered])
    if earlier_ran_scripts and not _accounts_carried_over(repo, base.commit, previous.commit, merge_etc):
        return _Start(base.commit)  # the previous layer merged this machine's accounts as they were then
    new_run_scripts = _needs_full_checkout([h for nevra, h in headers.items() if nevra not in layered])
    if earlier_ran_scripts and new_run_scripts and set(list(headers)[:len(layered)]) != layered:
        return _Start(base.commit)  # a rebuild would run a new package's scripts before an earlier one's
    return _Start(previous.commit, frozenset(layered), incremental=True)


def _previous_packages(repo: Repo, base: BaseInfo, origin: Origin, plan: LayerPlan,
                       previous: PreviousLayer) -> set[str] | None:
    """The NEVRAs the previous layered commit added to the base, when the new layer is exactly those
    packages (the same builds: the commit's state digest says so) plus new ones; None otherwise."""
    before, after = previous.origin, origin
    only_added = (set(before.requested) <= set(after.requested)
                  and set(before.requested_local) <= set(after.requested_local)
                  and before.evolve(requested=after.requested, requested_local=after.requested_local,
                                    pinned=after.pinned) == after)
    loaded = repo.load_commit(previous.commit)
    if (not only_added or loaded.parent != base.commit or not loaded.meta("rpmostree.clientlayer", False)
            or loaded.meta("rpmostree.clientlayer_version") != CLIENTLAYER_VERSION):
        return None
    pkglist = loaded.meta("rpmostree.rpmdb.pkglist")
    if not isinstance(pkglist, list):
        return None
    layered = {Nevra.from_pkglist_entry(tuple(entry)).nevra for entry in pkglist} - {n.nevra for n in base.nevras}
    planned = ({c.nevra.nevra for c in plan.install} | {n.nevra for n, _c in plan.local}
               | {n.nevra for n, _c, _o in plan.replacements})
    if not layered <= planned:
        return None
    earlier = LayerPlan(install=[c for c in plan.install if c.nevra.nevra in layered])
    if state_digest(before, earlier) != loaded.meta("rpmostree.state-sha512"):
        return None
    return layered


def _accounts_carried_over(repo: Repo, base_commit: str, previous_commit: str, merge_etc: Path | None) -> bool:
    """Whether the previous layer's passwd and group begin with exactly what merging the base's accounts
    with this machine's gives today (then its scripts' accounts follow, as in a rebuild)."""
    base_tree, previous_tree = LazyTree.of_commit(repo, base_commit), LazyTree.of_commit(repo, previous_commit)
    for name in ("passwd", "group"):
        seen: dict[str, str] = {}
        machine = fsroot.read_in_root(merge_etc.parent, f"{merge_etc.name}/{name}", _ACCOUNTS_LIMIT) \
            if merge_etc is not None else None
        for data in (_tree_file(repo, base_tree, f"usr/etc/{name}"), _tree_file(repo, base_tree, f"usr/lib/{name}"),
                     machine):
            for line in (data or b"").decode("utf-8", "replace").splitlines():
                if line.strip():
                    seen.setdefault(line.split(":", 1)[0], line)
        expected = list(seen.values())
        for relpath, wanted in ((f"usr/etc/{name}", [line for line in expected if _is_root_entry(line)]),
                                (f"usr/lib/{name}", [line for line in expected if not _is_root_entry(line)])):
            have = (_tree_file(repo, previous_tree, relpath) or b"").decode("utf-8", "replace").splitlines()
            if have[:len(wanted)] != wanted:
                return False
    return True


def _is_root_entry(line: str) -> bool:
    fields = line.split(":")
    return len(fields) > 2 and fields[2] == "0"


def _tree_file(repo: Repo, tree: MutableTree, relpath: str) -> bytes | None:
    parent, _, name = relpath.rpartition("/")
    node = tree.lookup_dir(parent)
    checksum = node.files.get(name) if node is not None else None
    if checksum is None or inspect.content_size(repo, checksum) > _ACCOUNTS_LIMIT:
        return None
    return repo.read_file(checksum)[1]


class _BaseOwners:
    """Which base package owns a path, read from the base rpmdb the first time a conflict asks."""

    def __init__(self, repo: Repo, base_commit: str, work: Path) -> None:
        self.repo = repo
        self.base_commit = base_commit
        self.work = work
        self._owners: dict[str, str] | None = None

    def __call__(self, path: str) -> str:
        if self._owners is None:
            self._owners = self._read()
        rpm_path = "/etc/" + path.removeprefix("/usr/etc/") if path.startswith("/usr/etc/") else path
        return self._owners.get(rpm_path, "base")

    def _read(self) -> dict[str, str]:
        dbroot = self.work / "owners-db"
        (dbroot / "usr/share").mkdir(parents=True, exist_ok=True)
        loaded = self.repo.load_commit(self.base_commit)
        checkout_tree(self.repo, (loaded.root_tree, loaded.root_meta), dbroot / rpmdb.RPMDB_DIR,
                      _subpath(rpmdb.RPMDB_DIR))
        owners: dict[str, str] = {}
        for line in rpmdb.query(dbroot, "[%{FILENAMES}\t%{=NEVRA}\n]").splitlines():
            name, _, nevra = line.partition("\t")
            owners.setdefault(name, nevra)
        return owners


def _needs_full_checkout(headers: list[RpmHeader]) -> bool:
    from strata.core.ownership import needs_fixup
    for header in headers:
        if any(header.scriptlets(kind) for kind in ("pre", "post", "posttrans")):
            return True
        if header.transfiletriggers_in():
            return True
        if any(needs_fixup(f) for f in header.files):
            return True
    return False


def _write_rpmdb(repo: Repo, base_commit: Commit, headers: list[RpmHeader], erase: list[str], epoch: int,
                 work: Path) -> Path:
    """The layered rpmdb, always the base's plus every package of the layer in the plan's order (a layer
    assembled from a previous layered commit gets the same bytes); returns its directory."""
    dbroot = work / "rpmdb-root"
    (dbroot / "usr" / "share").mkdir(parents=True)
    checkout_tree(repo, (base_commit.root_tree, base_commit.root_meta), dbroot / rpmdb.RPMDB_DIR,
                  _subpath(rpmdb.RPMDB_DIR))
    rpmdb.write_rpmdb_from_headers(dbroot, [h.raw for h in headers], erase=erase, epoch=epoch)
    return dbroot / rpmdb.RPMDB_DIR


def _set_rpmdb(repo: Repo, tree: MutableTree, dbdir: Path) -> None:
    db_node = tree.lookup_dir(rpmdb.RPMDB_DIR)
    if db_node is None:
        raise StrataError(f"the base has no /{rpmdb.RPMDB_DIR}")
    files: dict[str, str] = {}
    for entry in sorted(dbdir.iterdir()):
        st = entry.lstat()
        meta = FileMeta(st.st_uid, st.st_gid, st.st_mode)
        files[entry.name] = repo.write_content_from_file(meta, entry, st.st_size)
    db_node.files = files


def _write_dir(repo: Repo, rootfs: Path) -> tuple[str, str]:
    with repo.lock():
        return write_tree_from_dir(repo, rootfs)


def _import_packages(repo: Repo, plan: LayerPlan, sources: RepositorySet | None, cachedir: Path,
                     log: Log) -> dict[str, str]:
    commits: dict[str, str] = {}
    missing = []
    for candidate in plan.install:
        cached = cache.cached_commit(repo, candidate.nevra, candidate.checksum_text, nodocs=False)
        if cached:
            commits[candidate.nevra.nevra] = cached
        else:
            missing.append(candidate)
    if missing and sources is not None:
        total = sum(c.size for c in missing)
        log(f"Will download: {len(missing)} package{'s' if len(missing) != 1 else ''} ({human_size(total)})")
        downloads = cachedir / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        paths = sources.download(missing, downloads, log)
        with repo.lock(), progress.items("Importing packages", len(missing)) as bar:
            for candidate in missing:
                options = ImportOptions(repodata_checksum=candidate.checksum_text, repo_id=candidate.repo_id,
                                        repo_timestamp=sources.repo_timestamps().get(candidate.repo_id))
                path = paths[candidate.nevra.nevra]
                commits[candidate.nevra.nevra] = import_package(repo, RpmPackage.open(path), options)
                bar.advance(nbytes=path.stat().st_size)
        for path in paths.values():
            path.unlink(missing_ok=True)
    for nevra, commit in plan.local + [(new, commit) for new, commit, _old in plan.replacements]:
        commits[nevra.nevra] = commit
    ordered = [c.nevra.nevra for c in plan.install] + [n.nevra for n, _ in plan.local] + [
        n.nevra for n, _c, _o in plan.replacements]
    return {nevra: commits[nevra] for nevra in ordered}


def _remove_packages(repo: Repo, base_commit: str, tree: MutableTree, nevras: list[Nevra], work: Path,
                     log: Log) -> None:
    """Delete the files of removed packages that no remaining package owns (paths from the base rpmdb)."""
    dbroot = work / "basedb"
    if not (dbroot / "usr/share/rpm").exists():
        (dbroot / "usr/share").mkdir(parents=True, exist_ok=True)
        loaded = repo.load_commit(base_commit)
        checkout_tree(repo, (loaded.root_tree, loaded.root_meta), dbroot / "usr/share/rpm", _subpath("usr/share/rpm"))
    count = len(nevras)
    log(f"Applying {count} override{'s' if count != 1 else ''}")
    removed = {n.nevra for n in nevras}
    owned_by_others = set()
    for line in rpmdb.query(dbroot, "[%{=NEVRA} %{FILENAMES}\n]").splitlines():
        owner, _, name = line.partition(" ")
        if owner not in removed:
            owned_by_others.add(name)
    for nevra in nevras:
        for path in rpmdb.query(dbroot, "[%{FILEMODES:perms} %{FILENAMES}\n]", packages=[nevra.nevra]).splitlines():
            perms, _, name = path.partition(" ")
            if perms.startswith("d") or name in owned_by_others:
                continue
            translated = translate_path(name, 0o100644)
            if translated.stored:
                tree.remove(translated.stored)


def _run_scripts(rootfs: Path, headers: list[RpmHeader], merge_etc: Path | None, upgrades: set[str],
                 log: Log) -> None:
    if not headers:
        return
    _prepare_users(rootfs, merge_etc)
    run_package_scripts(rootfs, headers, log, upgrades=frozenset(upgrades))
    layout.split_passwd_and_group(rootfs, [], lambda _line: None)


def _prepare_users(rootfs: Path, merge_etc: Path | None) -> None:
    """Scripts see every account: the tree's system accounts and those created on this machine. The files
    are read inside their trees (a symlink there never reads the host's own passwd or shadow)."""
    fsroot.require_real_dir(rootfs, "usr/etc")
    for name in ("passwd", "group"):
        seen: dict[str, str] = {}
        sources = [(rootfs, f"usr/etc/{name}"), (rootfs, f"usr/lib/{name}")]
        if merge_etc is not None:
            sources.append((merge_etc.parent, f"{merge_etc.name}/{name}"))
        for root, relpath in sources:
            data = fsroot.read_in_root(root, relpath, _ACCOUNTS_LIMIT)
            for line in (data or b"").decode("utf-8", "replace").splitlines():
                if line.strip():
                    seen.setdefault(line.split(":", 1)[0], line)
        target = rootfs / "usr/etc" / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "w") as out:
            out.write("".join(line + "\n" for line in seen.values()))


def _nevra_variant(nevra: Nevra) -> Variant:
    return Variant("(sstsss)", (nevra.nevra, nevra.name, nevra.epoch, nevra.version, nevra.release, nevra.arch))


def _commit(repo: Repo, root: tuple[str, str], base: BaseInfo, origin: Origin, plan: LayerPlan,
            headers: list[RpmHeader], removed: list[Nevra]) -> str:
    base_commit = repo.load_commit(base.commit)
    installed = [n for n in base.nevras if n not in removed] + [h.nevra for h in headers]
    metadata: list[tuple[str, str, object]] = []
    if base_commit.version is not None:
        metadata.append(("version", "s", base_commit.version))
    metadata += [
        ("rpmostree.clientlayer", "b", True),
        ("rpmostree.clientlayer_version", "u", CLIENTLAYER_VERSION),
        ("rpmostree.state-sha512", "s", state_digest(origin, plan)),
        ("rpmostree.packages", "as", sorted(plan.active_requests)),
        ("rpmostree.modules", "as", []),
        ("rpmostree.removed-base-packages", "av", [_nevra_variant(n) for n in plan.removals]),
        ("rpmostree.replaced-base-packages", "a(vv)",
         [(_nevra_variant(new), _nevra_variant(old)) for new, _commit, old in plan.replacements]),
        ("rpmostree.rpmdb.pkglist", "a(sssss)", sorted(n.pkglist_entry() for n in installed)),
    ]
    with repo.lock():
        commit = write_commit(repo, root, CommitRequest(metadata=metadata, parent=base.commit,
                                                        timestamp=base_commit.timestamp))
        repo.sync()
    return commit


def import_local_rpm(repo: Repo, path: Path) -> tuple[str, Nevra]:
    """Import a local RPM into the package cache now; returns its origin identity (header SHA-256, NEVRA)."""
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    rpm = RpmPackage.open(path)
    with repo.lock():
        import_package(repo, rpm, ImportOptions())
    return hashlib.sha256(rpm.header_bytes).hexdigest(), rpm.nevra


def local_package_commit(repo: Repo, sha256: str, nevra_text: str) -> tuple[Nevra, str]:
    nevra = Nevra.parse(nevra_text)
    from strata.packages.pkgcache import package_ref
    commit = repo.read_ref(package_ref(nevra.name, nevra.epoch, nevra.version, nevra.release, nevra.arch))
    if commit is None or repo.load_commit(commit).meta("rpmostree.metadata_sha256") != sha256:
        raise NotFoundError(f"local package {nevra_text} is no longer in the package cache")
    return nevra, commit


def open_deployment_repos(etc: Path, cachedir: Path, log: Log) -> RepositorySet | None:
    repos_dir = etc / "yum.repos.d"
    if not repos_dir.is_dir():
        return None
    return open_repositories(repos_dir, None, cachedir, log)

