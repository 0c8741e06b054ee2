"""A lab sysroot driven through the real `strata` command line, in-process (a subprocess only to run commands
inside a deployment), for the invariant tests and the model-based random test."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

from strata.cli import main as cli_main
from strata.image.repo import Repo
from strata.image.transfer import pull_local
from strata.sysroot.sysroot import Sysroot
from tests.conftest import LAB_REF

ORIGIN_REF = f"lab:{LAB_REF}"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"strata {' '.join(self.argv)} -> {self.code}\n{self.out}{self.err}"


_cached_parser = functools.cache(cli_main.build_parser)


def strata(*argv: str) -> Result:
    """`strata ARGV...` in this process, with its output captured. The parser is built once: building it takes
    longer than most verbs."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.object(cli_main, "build_parser", _cached_parser):
        try:
            code = cli_main.main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(tuple(argv), code, out.getvalue(), err.getvalue())


class Box:
    """A directory sysroot with the lab's remote `lab`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def sysroot(self) -> Sysroot:
        return Sysroot.open(self.root)

    def client(self, verb: str, *args: str) -> Result:
        return strata(*verb.split(), "--sysroot", str(self.root), *args)

    def admin(self, verb: str, *args: str) -> Result:
        return strata("admin", verb, "--sysroot", str(self.root), *args)

    def must(self, result: Result) -> Result:
        if not result.ok:
            raise AssertionError(str(result))
        return result

    def status_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.must(self.client("status", "--json")).out)
        return data

    def inside(self, *argv: str, stateroot: str | None = None) -> Result:
        """argv inside the booted deployment (or the first one of `stateroot`) through `strata admin run`, in this
        process; the command's own output is taken from file descriptors 1 and 2."""
        where = [f"--os={stateroot}"] if stateroot else []
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            with _descriptors_to(out.fileno(), err.fileno()):
                result = self.admin("run", *where, "--", *argv)
            out.seek(0)
            err.seek(0)
            return Result(result.argv, result.code, out.read().decode("utf-8", "replace") + result.out,
                          err.read().decode("utf-8", "replace") + result.err)


@contextlib.contextmanager
def _descriptors_to(stdout: int, stderr: int) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def make_lab_box(lab_repo: Path, dest: Path, *, server: Path | None = None) -> Box:
    """A booted sysroot with one deployment of the lab base (`rw` on its command line). `server` (default:
    lab_repo) is the repository the remote `lab` points at."""
    source = server or lab_repo
    root = Sysroot.init_fs(dest)
    root.os_init("lab")
    pull_local(Repo.open(source), root.repo, [LAB_REF], remote="lab")
    root.repo.config.set('remote "lab"', "url", f"file://{source}")
    root.repo.save_config()
    box = Box(root.path)
    box.must(box.admin("deploy", "--os=lab", "--karg=rw", ORIGIN_REF))
    box.must(box.admin("boot"))
    return box


# ---------------------------------------------------------------- the reference model


HOST = "lab"
GUEST = "guest"
BASE_REFSPEC = ORIGIN_REF
DEVEL_REFSPEC = "lab:strata-lab/x86_64/devel"
# What a layered request adds on the lab bases (the lab packages' own dependencies; the rpm oracle checks it).
LAYERS: dict[str, frozenset[str]] = {
    "htop": frozenset({"htop", "libnl-3-200", "libnl-genl-3-200"}),
    "nano": frozenset({"nano"}),
    "tree": frozenset({"tree"}),
    "test-noarch": frozenset({"test-noarch"}),
    "test-conflict-a": frozenset({"test-conflict-a"}),
    "test-conflict-b": frozenset({"test-conflict-b"}),
    "test-broken-dep": frozenset({"test-broken-dep"}),
}
REPLACEABLE = ("demo-engine", "demo-engine-common", "demo-engine-plugin")
UPDATES_DIR = "lab-updates"


@dataclass(frozen=True)
class RpmFile:
    name: str
    evr: str
    path: Path
    probe: str | None  # a file under /usr/bin the package owns, to look for inside a deployment


class Catalog:
    """Facts about the lab: every RPM (lab and lab-updates), the package sets of the composed bases, and the
    real rpm as the oracle of whether a package set is sound (dependencies closed, no conflicts)."""

    def __init__(self, distro: Path, bases: dict[str, dict[str, str]]) -> None:
        self.rpms: dict[tuple[str, str], RpmFile] = {}
        for path in sorted(distro.glob("*/Packages/*.rpm")):
            self._add(path)
        self.updates = {f.name: f for f in self.rpms.values() if f.path.parent.parent.name == UPDATES_DIR}
        self.bases = bases  # base commit -> {name: evr}
        self._closed: dict[frozenset[Path], bool] = {}

    def _add(self, path: Path) -> None:
        query = subprocess.run(["rpm", "-qp", "--nosignature", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\n",
                                str(path)], capture_output=True, text=True, check=True).stdout.split()
        files = subprocess.run(["rpm", "-qpl", "--nosignature", str(path)], capture_output=True, text=True,
                               check=True).stdout.split()
        probe = next((f for f in files if f.startswith(("/usr/bin/", "/bin/"))), None)
        self.rpms[(query[0], query[1])] = RpmFile(query[0], query[1], path, probe)

    def newest_evr(self, name: str) -> str | None:
        evrs = [evr for (n, evr), f in self.rpms.items() if n == name and f.path.parent.parent.name != UPDATES_DIR]
        return evrs[0] if evrs else None

    def closed(self, packages: dict[str, str]) -> bool:
        """Whether this set, installed, has every dependency met and no conflict, as `rpm -Va` judges an
        installed system (the deep invariant's measure): requirements only of install scripts do not count."""
        files = frozenset(self.rpms[(name, evr)].path for name, evr in packages.items())
        if files not in self._closed:
            with tempfile.TemporaryDirectory(prefix="strata-oracle-") as tmp:
                rpm = ["rpm", "--root", tmp, "--dbpath", "/rpmdb"]
                subprocess.run([*rpm, "-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", "--ignorearch",
                                "--nosignature", "--nodigest", *map(str, sorted(files))],
                               capture_output=True, check=True)
                verify = subprocess.run([*rpm, "-Va", "--nofiles", "--nodigest", "--nosignature"],
                                        capture_output=True, check=False)
            self._closed[files] = verify.returncode == 0
        return self._closed[files]


@dataclass(frozen=True)
class Request:
    """What a deployment's origin asks for."""

    refspec: str = BASE_REFSPEC
    version: str | None = None  # `deploy VERSION` (override-commit)
    requested: frozenset[str] = frozenset()
    removals: frozenset[str] = frozenset()
    replacements: frozenset[str] = frozenset()


@dataclass
class MDep:
    """A deployment as the model expects it."""

    ident: int
    stateroot: str
    base: str
    request: Request
    kargs: tuple[str, ...]
    markers: frozenset[str] | None  # /etc marker files; None: not tracked (staged, guest)
    staged: bool = False
    pinned: bool = False
    name: str | None = None  # the real STATEROOT:CSUM.SERIAL, bound the first time it is compared


def expected_packages(catalog: Catalog, base: str, request: Request) -> dict[str, str]:
    base_packages = catalog.bases[base]
    packages = {n: evr for n, evr in base_packages.items() if n not in request.removals}
    for name in request.replacements:
        packages[name] = catalog.updates[name].evr
    for wanted in request.requested:
        if wanted in base_packages:
            continue  # inactive request: the base provides it
        for name in LAYERS[wanted]:
            evr = catalog.newest_evr(name)
            assert evr is not None, name
            packages[name] = evr
    return packages


class Refused(Exception):
    """The model predicts that the step fails with an error and changes nothing."""


class Ambiguous(Exception):
    """rpm-ostree's behaviour for this step is not pinned down; the generator does not take it."""


@dataclass
class Model:
    catalog: Catalog
    deps: dict[str, list[MDep]]
    booted: int
    history: dict[str, list[tuple[str, str]]]  # refspec -> published (version, commit), oldest first
    unpublished: list[tuple[str, str]]  # base versions still to publish, in order
    live: dict[str, str] | None = None  # the packages apply-live put into the booted deployment
    counter: int = 0

    def fresh(self) -> int:
        self.counter += 1
        return self.counter

    # ------------------------------------------------------------ reading

    def first(self, stateroot: str) -> MDep | None:
        listed = self.deps.get(stateroot, [])
        return listed[0] if listed else None

    def booted_dep(self) -> MDep:
        return next(d for d in self.deps[HOST] if d.ident == self.booted)

    def booted_index(self) -> int:
        return next(i for i, d in enumerate(self.deps[HOST]) if d.ident == self.booted)

    def pending(self) -> MDep | None:
        return self.deps[HOST][0] if self.booted_index() > 0 else None

    def packages(self, dep: MDep) -> dict[str, str]:
        return expected_packages(self.catalog, dep.base, dep.request)

    def head(self, refspec: str) -> str:
        return self.history[refspec][-1][1]

    def find(self, name: str) -> MDep:
        return next(d for deps in self.deps.values() for d in deps if d.name == name)

    # ------------------------------------------------------------ writing a new deployment

    def origin_merge(self, stateroot: str) -> MDep:
        merge = self.first(stateroot)
        if merge is None:
            raise Refused(f"no deployment of {stateroot}")
        return merge

    def derive(self, stateroot: str, *, base: str | None = None, request: Request | None = None,
               kargs: tuple[str, ...] | None = None) -> None:
        """A change: a new deployment from the origin merge deployment (staged on the booted stateroot, written
        behind the default elsewhere); refused when its package set does not install."""
        merge = self.origin_merge(stateroot)
        new = MDep(self.fresh(), stateroot, base or merge.base, request or merge.request,
                   merge.kargs if kargs is None else kargs, None)
        if not self.catalog.closed(self.packages(new)):
            raise Refused("the package set does not install")
        if stateroot == HOST:
            new.staged = True
            self.deps[HOST] = [new, *[d for d in self.deps[HOST] if not d.staged]]
            return
        self.deps[stateroot] = [new, *[d for d in self.deps[stateroot] if d.pinned or d is merge]]

    def unchanged(self, stateroot: str, base: str, request: Request) -> bool:
        merge = self.origin_merge(stateroot)
        return merge.base == base and merge.request == request

    # ------------------------------------------------------------ the verbs

    def install(self, stateroot: str, name: str) -> None:
        merge = self.origin_merge(stateroot)
        if name in merge.request.requested or name not in LAYERS or name in self.catalog.bases[merge.base]:
            raise Refused(name)
        self.derive(stateroot, request=replace(merge.request, requested=merge.request.requested | {name}))

    def uninstall(self, stateroot: str, name: str) -> None:
        merge = self.origin_merge(stateroot)
        if name not in merge.request.requested:
            raise Refused(name)
        self.derive(stateroot, request=replace(merge.request, requested=merge.request.requested - {name}))

    def override_remove(self, names: tuple[str, ...]) -> None:
        merge = self.origin_merge(HOST)
        request = merge.request
        if any(n in request.replacements for n in names):
            raise Ambiguous("remove of a replaced package")
        if any(n not in self.catalog.bases[merge.base] or n in request.removals for n in names):
            raise Refused(" ".join(names))
        self.derive(HOST, request=replace(request, removals=request.removals | set(names)))

    def override_replace(self, names: tuple[str, ...]) -> None:
        merge = self.origin_merge(HOST)
        request = merge.request
        if any(n in request.removals for n in names):
            raise Ambiguous("replace of a removed package")
        if any(n in request.replacements or n not in self.catalog.bases[merge.base] for n in names):
            raise Refused(" ".join(names))
        self.derive(HOST, request=replace(request, replacements=request.replacements | set(names)))

    def override_reset(self, name: str | None) -> None:
        request = self.origin_merge(HOST).request
        if name is None:
            if not (request.removals or request.replacements):
                raise Ambiguous("reset --all without overrides")
            self.derive(HOST, request=replace(request, removals=frozenset(), replacements=frozenset()))
            return
        if name not in request.removals | request.replacements:
            raise Refused(name)
        self.derive(HOST, request=replace(request, removals=request.removals - {name},
                                          replacements=request.replacements - {name}))

    def reset(self) -> None:
        request = self.origin_merge(HOST).request
        if not (request.requested or request.removals or request.replacements):
            raise Ambiguous("reset with nothing to reset")
        self.derive(HOST, request=Request(request.refspec, request.version))

    def kargs_edit(self, append: str | None, delete: str | None) -> None:
        kargs = list(self.origin_merge(HOST).kargs)
        if delete is not None:
            if delete not in kargs:
                raise Ambiguous("delete of a missing argument")
            kargs.remove(delete)
        if append is not None:
            kargs.append(append)
        self.derive(HOST, kargs=tuple(kargs))

    def upgrade(self) -> bool:
        """False: nothing new (no deployment)."""
        merge = self.origin_merge(HOST)
        head = self.head(merge.request.refspec)
        if head == merge.base:
            if merge.request.version is not None:
                raise Ambiguous("upgrade to the pinned commit")
            return False
        self.derive(HOST, base=head, request=replace(merge.request, version=None))
        return True

    def deploy(self, version: str) -> bool:
        merge = self.origin_merge(HOST)
        commit = next((c for v, c in self.history[merge.request.refspec] if v == version), None)
        if commit is None:
            raise Refused(version)
        request = replace(merge.request, version=version)
        if commit == merge.base:
            if merge.request.version == version:
                return False
            raise Ambiguous("deploy of the current base")
        self.derive(HOST, base=commit, request=request)
        return True

    def rebase(self, refspec: str) -> None:
        merge = self.origin_merge(HOST)
        if refspec == merge.request.refspec or refspec not in self.history:
            raise Refused(refspec)
        self.derive(HOST, base=self.head(refspec), request=replace(merge.request, refspec=refspec, version=None))

    def rollback(self) -> None:
        host = self.deps[HOST]
        index = self.booted_index()
        if index > 0 and host[0].staged:
            raise Refused("staged")
        if index == 0 and len(host) == 1:
            raise Refused("no rollback")
        target = host[index + 1] if index + 1 < len(host) else host[index]
        self.deps[HOST] = [target, *[d for d in host if d is not target]]

    def cleanup(self, pending: bool, rollback: bool) -> bool:
        """False: `Deployments unchanged.`"""
        host = self.deps[HOST]
        index = self.booted_index()
        keep = [d for i, d in enumerate(host)
                if d.pinned or i == index or (i < index and not pending) or (i > index and not rollback)]
        changed = len(keep) != len(host)
        self.deps[HOST] = keep
        return changed

    def boot(self) -> None:
        host = self.deps[HOST]
        if host[0].staged:
            staged, booted = host[0], self.booted_dep()
            staged.staged, staged.markers = False, booted.markers
            self.deps[HOST] = [staged, *[d for d in host[1:] if d.pinned or d.ident == booted.ident]]
        self.booted = self.deps[HOST][0].ident
        self.live = None

    def apply_live(self, allow_replacement: bool) -> None:
        pending = self.pending()
        if pending is None:
            raise Refused("no pending deployment")
        source = self.live or self.packages(self.booted_dep())
        target = self.packages(pending)
        replaced = any(n not in target or target[n] != evr for n, evr in source.items())
        if replaced and not allow_replacement:
            raise Refused("replacement not allowed")
        self.live = target

    def undeploy(self, dep: MDep) -> None:
        if dep.ident == self.booted:
            raise Refused("booted")
        self.deps[dep.stateroot] = [d for d in self.deps[dep.stateroot] if d is not dep]

    def pin(self, dep: MDep, pinned: bool) -> None:
        if dep.staged:
            raise Refused("staged")
        dep.pinned = pinned

    def publish(self) -> tuple[str, str]:
        version, commit = self.unpublished.pop(0)
        self.history[BASE_REFSPEC].append((version, commit))
        return version, commit

    def state_key(self) -> tuple[object, ...]:
        """What identifies the state of the system, for counting distinct states."""
        per_root = tuple(
            (root, tuple((tuple(sorted(self.packages(d).items())), d.kargs, d.staged, d.pinned,
                          d.ident == self.booted, d.request.refspec, d.request.version,
                          tuple(sorted(d.markers or ()))) for d in deps))
            for root, deps in sorted(self.deps.items()))
        live = tuple(sorted(self.live.items())) if self.live is not None else None
        return per_root, live, len(self.history[BASE_REFSPEC])
