"""Dependency solving with libsolv (PyPI `solv`) over rpm-md repositories."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import solv

from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.packages.nevra import Nevra
from strata.packages.rpmmd import RepoMetadata
from strata.packages.text import shown, summarize

_MAX_PROBLEMS_SHOWN = 10
LOCAL_REPO = "@commandline"
_CHECKSUM_TYPES = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512"})
_SELECT_FLAGS = (solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_PROVIDES
                 | solv.Selection.SELECTION_CANON | solv.Selection.SELECTION_DOTARCH
                 | solv.Selection.SELECTION_REL | solv.Selection.SELECTION_FILELIST)


@dataclass(frozen=True)
class Candidate:
    """A package available in a repository."""

    nevra: Nevra
    repo_id: str
    location: str
    checksum: tuple[str, str]  # (hashlib algorithm, hex)
    size: int

    @property
    def checksum_text(self) -> str:
        return f"{self.checksum[0]}:{self.checksum[1]}"


@dataclass(frozen=True)
class InstalledPackage:
    """A package of a base tree: identity plus what it provides (for solving layers on top)."""

    nevra: Nevra
    provides: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockedPackage:
    """A lockfile entry: this name may only be installed at this evr (and arch, and digest, when given)."""

    name: str
    evr: str
    arch: str = ""
    digest: str = ""  # "sha256:HEX" as rpm-ostree writes it


@dataclass
class Restrictions:
    """Treefile rules beyond plain requests: repo-packages pins and lockfiles."""

    repo_packages: list[tuple[str, str]] = field(default_factory=list)  # (request, repository id)
    locked: list[LockedPackage] = field(default_factory=list)
    lockfile_repos: frozenset[str] = frozenset()  # used only for locked packages
    strict: bool = False  # nothing but locked packages may be installed


@dataclass
class Solution:
    install: list[Candidate] = field(default_factory=list)  # in installation order
    erase: list[Nevra] = field(default_factory=list)


class Solver:
    def __init__(self, repos: Iterable[RepoMetadata]) -> None:
        self.pool = solv.Pool()
        self.pool.setarch()
        self.repos: dict[str, RepoMetadata] = {}
        for meta in repos:
            self._add_repo(meta)
        self.installed: Any = None
        self._local: dict[int, Candidate] = {}  # @commandline solvable id -> the RPM file as a candidate

    def _add_repo(self, meta: RepoMetadata) -> None:
        repo = self.pool.add_repo(meta.config.id)
        self.repos[meta.config.id] = meta
        with _xfopen(meta.repomd) as handle:
            self._loaded(repo.add_repomdxml(handle, 0), meta, "repomd.xml")
        with _xfopen(meta.files["primary"]) as handle:
            self._loaded(repo.add_rpmmd(handle, None, 0), meta, "primary metadata")
        if "filelists" in meta.files:
            with _xfopen(meta.files["filelists"]) as handle:
                self._loaded(repo.add_rpmmd(handle, None, solv.Repo.REPO_EXTEND_SOLVABLES), meta, "filelists")

    def _loaded(self, ok: bool, meta: RepoMetadata, what: str) -> None:
        if not ok:
            reason = " ".join(str(self.pool.errstr).split())
            raise CorruptionError(f"repository '{meta.config.id}': malformed {what} ({shown(reason)})")

    def set_installed(self, packages: Iterable[InstalledPackage]) -> None:
        """Declare the base packages (as installed, and locked unless removed)."""
        repo = self.pool.add_repo("@System")
        for pkg in packages:
            solvable = repo.add_solvable()
            solvable.name = pkg.nevra.name
            solvable.evr = pkg.nevra.evr
            solvable.arch = pkg.nevra.arch
            solvable.add_provides(self.pool.Dep(pkg.nevra.name).Rel(solv.REL_EQ, self.pool.Dep(pkg.nevra.evr)))
            for provide in pkg.provides:
                solvable.add_provides(self._dep(provide))
            for path in pkg.files:
                solvable.add_provides(self.pool.Dep(path))
        repo.internalize()
        self.pool.installed = repo
        self.installed = repo

    def add_local_rpms(self, paths: Iterable[Path]) -> None:
        """RPM files given on a command line: the '@commandline' repository, built from their headers; each
        one is installed by the next resolve, its dependencies solved like any request's."""
        from strata.packages.rpmread import RpmPackage
        repo = self.pool.add_repo(LOCAL_REPO)
        for path in paths:
            rpm = RpmPackage.open(path)
            solvable = repo.add_solvable()
            solvable.name, solvable.evr, solvable.arch = rpm.nevra.name, rpm.nevra.evr, rpm.nevra.arch
            solvable.add_provides(self.pool.Dep(rpm.nevra.name).Rel(solv.REL_EQ, self.pool.Dep(rpm.nevra.evr)))
            for kind, key in (("provides", solv.SOLVABLE_PROVIDES), ("requires", solv.SOLVABLE_REQUIRES),
                              ("conflicts", solv.SOLVABLE_CONFLICTS), ("obsoletes", solv.SOLVABLE_OBSOLETES)):
                for name, flags, version in rpm.dependencies(kind):
                    if not name.startswith("rpmlib("):
                        solvable.add_deparray(key, self._rpm_dep(name, flags, version))
            for entry in rpm.files:
                solvable.add_provides(self.pool.Dep(entry.path))
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            self._local[solvable.id] = Candidate(rpm.nevra, LOCAL_REPO, str(path), ("sha256", digest),
                                                 path.stat().st_size)
        repo.internalize()

    def _rpm_dep(self, name: str, flags: int, version: str) -> Any:
        """A dependency from an RPM header (sense bits LESS 2, GREATER 4, EQUAL 8) as a libsolv Dep."""
        relation = (solv.REL_LT if flags & 2 else 0) | (solv.REL_GT if flags & 4 else 0) | \
            (solv.REL_EQ if flags & 8 else 0)
        if not version or not relation:
            return self.pool.Dep(name)
        return self.pool.Dep(name).Rel(relation, self.pool.Dep(version))

    def available(self, nevra: Nevra) -> Candidate | None:
        """The repository package that is exactly this build, if a repository (not @System) has it."""
        self._prepare()
        for solvable in self._available():
            if solvable.repo.name != LOCAL_REPO and _nevra(solvable) == nevra:
                return self._candidate(solvable)
        return None

    def _prepare(self) -> None:
        self.pool.addfileprovides()
        self.pool.createwhatprovides()

    def _dep(self, text: str) -> Any:
        parts = text.split()
        if len(parts) == 3:
            ops = {"=": solv.REL_EQ, ">=": solv.REL_GT | solv.REL_EQ, "<=": solv.REL_LT | solv.REL_EQ,
                   ">": solv.REL_GT, "<": solv.REL_LT}
            if parts[1] in ops:
                return self.pool.Dep(parts[0]).Rel(ops[parts[1]], self.pool.Dep(parts[2]))
        return self.pool.Dep(text)

    def providers(self, request: str) -> list[Any]:
        """Solvables (installed or available) matching a request string."""
        self._prepare()
        return list(self.pool.select(request, _SELECT_FLAGS).solvables())

    def installed_providers(self, request: str) -> list[Nevra]:
        return [_nevra(s) for s in self.providers(request) if self.installed is not None and s.repo == self.installed]

    def resolve(self, requests: Iterable[str], *, exclude: Iterable[str] = (), remove: Iterable[str] = (),
                recommends: bool = True, restrictions: Restrictions | None = None,
                allow_updates: bool = False) -> Solution:
        """With allow_updates, installed packages are not locked: a request may pull newer builds of them
        (each shows as an erase of the old build and an install of the new one)."""
        self._prepare()
        jobs: list[Any] = [self.pool.Job(solv.Job.SOLVER_SOLVABLE | solv.Job.SOLVER_INSTALL, sid)
                           for sid in self._local]
        if restrictions is not None:
            jobs += self._lock_jobs(restrictions) + self._pin_jobs(restrictions.repo_packages)
        missing = []
        for request in requests:
            selection = self.pool.select(request, _SELECT_FLAGS)
            if selection.isempty():
                missing.append(request)
                continue
            jobs += selection.jobs(solv.Job.SOLVER_INSTALL)
        if missing:
            raise NotFoundError(f"Packages not found: {summarize(missing)}")
        for name in exclude:
            selection = self.pool.select(name, solv.Selection.SELECTION_NAME)
            jobs += selection.jobs(solv.Job.SOLVER_LOCK)
        removed = set()
        for name in remove:
            selection = self.pool.select(name, solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_INSTALLED_ONLY)
            jobs += selection.jobs(solv.Job.SOLVER_ERASE)
            removed.add(name)
        if self.installed is not None and not allow_updates:
            for solvable in self.installed.solvables:
                if solvable.name not in removed:
                    jobs.append(self.pool.Job(solv.Job.SOLVER_SOLVABLE | solv.Job.SOLVER_LOCK, solvable.id))
        solver = self.pool.Solver()
        if not recommends:
            solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
        if allow_updates:  # installed packages carry no vendor (they come from an rpmdb), repository ones do
            solver.set_flag(solv.Solver.SOLVER_FLAG_ALLOW_VENDORCHANGE, 1)
        problems = solver.solve(jobs)
        if problems:
            texts = [f"Problem {i}: {p}" if len(problems) > 1 else f"Problem: {p}" for i, p in enumerate(problems, 1)]
            count = len(problems)
            shown_texts = "; ".join(texts[:_MAX_PROBLEMS_SHOWN])
            more = f"; ... and {count - _MAX_PROBLEMS_SHOWN:,} more" if count > _MAX_PROBLEMS_SHOWN else ""
            raise StrataError(f"Could not depsolve transaction; {count} problem{'s' if count > 1 else ''} detected: "
                              + shown_texts + more)
        transaction = solver.transaction()
        transaction.order()
        solution = Solution()
        for solvable in transaction.steps():
            if self.installed is not None and solvable.repo == self.installed:
                solution.erase.append(_nevra(solvable))
            else:
                solution.install.append(self._local.get(solvable.id) or self._candidate(solvable))
        return solution

    def _available(self) -> list[Any]:
        return [s for s in self.pool.solvables_iter() if self.installed is None or s.repo != self.installed]

    def _pin_jobs(self, pins: list[tuple[str, str]]) -> list[Any]:
        """Each pinned request is installed from its repository; its name from other repositories is locked out."""
        jobs: list[Any] = []
        for request, repo_id in pins:
            found = [s for s in self.pool.select(request, _SELECT_FLAGS).solvables() if s.repo.name == repo_id]
            if not found:
                raise NotFoundError(f"No matches for '{shown(request)}' in repo '{shown(repo_id)}'")
            jobs.append(self.pool.Job(solv.Job.SOLVER_SOLVABLE_ONE_OF | solv.Job.SOLVER_INSTALL,
                                      self.pool.towhatprovides([s.id for s in found])))
            names = {s.name for s in found}
            jobs += [self.pool.Job(solv.Job.SOLVER_SOLVABLE | solv.Job.SOLVER_LOCK, s.id)
                     for s in self._available() if s.name in names and s.repo.name != repo_id]
        return jobs

    def _lock_jobs(self, restrictions: Restrictions) -> list[Any]:
        """Lockfile semantics (rpm-ostree's relaxed mode): a locked name can only be its locked build, and
        lockfile repositories offer nothing else; strict mode allows nothing but locked builds."""
        if not restrictions.locked:
            return []
        allowed: set[int] = set()
        for lock in restrictions.locked:
            allowed.update(self._locked_ids(lock))
        names = {lock.name for lock in restrictions.locked}
        jobs = []
        for solvable in self._available():
            if solvable.id in allowed:
                continue
            if restrictions.strict or solvable.name in names or solvable.repo.name in restrictions.lockfile_repos:
                jobs.append(self.pool.Job(solv.Job.SOLVER_SOLVABLE | solv.Job.SOLVER_LOCK, solvable.id))
        return jobs

    def _locked_ids(self, lock: LockedPackage) -> list[int]:
        matching = [s for s in self._available() if s.name == lock.name and s.evr == lock.evr
                    and (not lock.arch or s.arch == lock.arch)]
        verified = [s for s in matching if not lock.digest or _digest(s) == lock.digest]
        if not verified:
            arch = f".{lock.arch}" if lock.arch else ""
            raise NotFoundError(f"Couldn't find locked package '{shown(lock.name)}-{shown(lock.evr)}{shown(arch)}' "
                                f"(pkgs matching NEVRA: {len(matching)}; "
                                f"mismatched checksums: {len(matching) - len(verified)})")
        return [s.id for s in verified]

    def _candidate(self, solvable: Any) -> Candidate:
        location, _media = solvable.lookup_location()
        checksum = solvable.lookup_checksum(solv.SOLVABLE_CHECKSUM)
        if checksum is None:
            raise CorruptionError(f"package {shown(str(solvable))} has no checksum in its repository metadata")
        if not location:
            raise CorruptionError(f"package {shown(str(solvable))} has no location in its repository metadata")
        size = solvable.lookup_num(solv.SOLVABLE_DOWNLOADSIZE) or 0
        algo = checksum.typestr().lower()
        if algo not in _CHECKSUM_TYPES:
            raise CorruptionError(f"package {shown(str(solvable))}: unsupported checksum type {shown(algo)}")
        return Candidate(_nevra(solvable), solvable.repo.name, location, (algo, checksum.hex()), int(size))


def _digest(solvable: Any) -> str:
    checksum = solvable.lookup_checksum(solv.SOLVABLE_CHECKSUM)
    return f"{checksum.typestr().lower()}:{checksum.hex()}" if checksum is not None else ""


def _nevra(solvable: Any) -> Nevra:
    evr = solvable.evr
    epoch = 0
    if ":" in evr:
        epoch_text, _, evr = evr.partition(":")
        if not epoch_text.isdigit() or len(epoch_text) > 10:
            raise CorruptionError(f"package {shown(str(solvable))}: invalid epoch in its repository metadata")
        epoch = int(epoch_text)
    version, _, release = evr.rpartition("-")
    return Nevra(solvable.name, epoch, version, release, solvable.arch)


class _xfopen:
    """solv.xfopen as a context manager (it decompresses .gz/.xz/.zst metadata by suffix)."""

    def __init__(self, path: object) -> None:
        self.handle = solv.xfopen(str(path))
        if self.handle is None:
            raise StrataError(f"cannot open {path}")

    def __enter__(self) -> Any:
        return self.handle

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
