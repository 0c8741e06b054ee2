"""What must hold in a sysroot after every transaction (and after a kill at any moment), checked from disk.

`check_invariants` lists every violation it finds as one readable line; an empty list means the sysroot is
sound. The cheap checks read refs, commit objects, boot entries and origin files only (milliseconds); the
deep ones verify every object of the repository and every deployment's package dependencies."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from strata.core.origin import Origin
from strata.errors import StrataError
from strata.image.keyfile import KeyFile
from strata.image.objects import ObjectType
from strata.sysroot import bls
from strata.sysroot.sysroot import STAGED_STATE, Deployment, Sysroot

BASE_REF_PREFIX = "rpmostree/base"
RPMDB_DIR = "usr/share/rpm"


class InvariantError(StrataError):
    """A transaction left the sysroot in a state that breaks one of the invariants."""

    def __init__(self, violations: list[str]) -> None:
        super().__init__("the sysroot breaks its invariants: " + "; ".join(violations))
        self.violations = violations


@dataclass(frozen=True)
class PendingSnapshot:
    """What a stateroot boots next, as far as a write to another stateroot must leave it alone."""

    stateroot: str
    csum: str
    deployserial: int
    staged: bool
    origin: bytes  # the origin file as stored (b"" when it is missing)
    kargs: tuple[str, ...]  # without ostree=, which names the boot version and changes with every entry rewrite


def pending_deployment(deployments: list[Deployment], booted: Deployment | None,
                       stateroot: str) -> Deployment | None:
    """The deployment `stateroot` boots next unless the admin acts: its staged deployment if it has one,
    else its first deployment in boot order unless that is the booted one.

    This is rpm-ostree's "pending deployment" (the first deployment of the stateroot placed before the booted
    one; a staged deployment is always pending), extended to stateroots that are not booted: there every
    deployment is "before" the booted one, so the first is the one that would boot for that stateroot.
    A rollback (placed after the booted deployment) is never pending."""
    first = next((d for d in deployments if d.stateroot == stateroot), None)
    if first is None or (booted is not None and first.key == booted.key):
        return None
    return first


def snapshot_pending(sysroot: Sysroot) -> dict[str, PendingSnapshot | None]:
    """Per stateroot, its pending deployment (see `pending_deployment`), or None."""
    deployments = sysroot.deployments()
    booted = sysroot.booted()
    result: dict[str, PendingSnapshot | None] = {}
    for stateroot in sysroot.stateroots():
        dep = pending_deployment(deployments, booted, stateroot)
        result[stateroot] = None if dep is None else _snapshot(sysroot, dep)
    return result


def _snapshot(sysroot: Sysroot, dep: Deployment) -> PendingSnapshot:
    origin_path = sysroot.origin_path(dep)
    origin = origin_path.read_bytes() if origin_path.exists() else b""
    return PendingSnapshot(dep.stateroot, dep.csum, dep.serial, dep.staged, origin,
                           tuple(bls.without_ostree_karg(dep.kargs)))


def check_invariants(sysroot: Sysroot, *, before: dict[str, PendingSnapshot | None] | None = None,
                     changed_stateroot: str | None = None, deep: bool = False) -> list[str]:
    """Every violated invariant, one line each. `before` is `snapshot_pending` taken before a write to
    `changed_stateroot`: the pending deployments of all other stateroots must be exactly as they were."""
    try:
        deployments = sysroot.deployments()
        booted = sysroot.booted()
    except (StrataError, OSError) as exc:
        return [f"the deployment list cannot be read: {exc}"]
    problems = _check_commits(sysroot, deployments)
    problems += _check_entries(sysroot, deployments)
    problems += _check_booted(sysroot, booted)
    problems += _check_staged_state(sysroot, deployments)
    if before is not None:
        problems += _check_pending_unchanged(sysroot, before, changed_stateroot)
    if deep:
        problems += _check_repository(sysroot)
        problems += _check_dependencies(sysroot, deployments)
    return problems


def require_invariants(sysroot: Sysroot, *, before: dict[str, PendingSnapshot | None] | None = None,
                       changed_stateroot: str | None = None, deep: bool = False) -> None:
    """Raise InvariantError listing every violation, if there is any."""
    problems = check_invariants(sysroot, before=before, changed_stateroot=changed_stateroot, deep=deep)
    if problems:
        raise InvariantError(problems)


def _label(dep: Deployment) -> str:
    return f"deployment {dep.stateroot}:{dep.name}{' (staged)' if dep.staged else ''}"


# ---------------------------------------------------------------- commits and the refs that keep them


def _check_commits(sysroot: Sysroot, deployments: list[Deployment]) -> list[str]:
    repo = sysroot.repo
    refs = repo.list_refs(remotes=False)
    bootversion = sysroot.bootversion
    deployment_prefix = f"ostree/{bootversion}/{sysroot.subbootversion(bootversion)}/"
    held_by_deployment_refs = {c for name, c in refs.items() if name.startswith(deployment_prefix)}
    held_by_base_refs = {c for name, c in refs.items() if name.startswith(BASE_REF_PREFIX + "/")}
    problems: list[str] = []
    for dep in deployments:
        problem = _commit_problem(sysroot, dep.csum, "commit")
        if problem is not None:
            problems.append(f"{_label(dep)}: {problem}")
            continue
        if dep.csum not in held_by_deployment_refs:
            problems.append(f"{_label(dep)}: commit {dep.csum} is not held by a deployment ref "
                            f"({deployment_prefix}N)")
        problems += _base_problems(sysroot, dep, held_by_base_refs)
    return problems


def _commit_problem(sysroot: Sysroot, csum: str, what: str) -> str | None:
    if not sysroot.repo.has_object(csum, ObjectType.COMMIT):
        return f"{what} {csum} is missing from the repository"
    if sysroot.repo.is_partial(csum):
        return f"{what} {csum} is only partially in the repository"
    return None


def _base_problems(sysroot: Sysroot, dep: Deployment, held: set[str]) -> list[str]:
    try:
        commit = sysroot.repo.load_commit(dep.csum)
    except StrataError as exc:
        return [f"{_label(dep)}: commit {dep.csum} cannot be read: {exc}"]
    if not commit.meta("rpmostree.clientlayer", False):
        return []
    if commit.parent is None:
        return [f"{_label(dep)}: layered commit {dep.csum} has no base (parent) commit"]
    problem = _commit_problem(sysroot, commit.parent, "base commit")
    if problem is not None:
        return [f"{_label(dep)}: {problem}"]
    if commit.parent not in held:
        return [f"{_label(dep)}: base commit {commit.parent} is not held by a {BASE_REF_PREFIX}/N ref"]
    return []


# ---------------------------------------------------------------- boot entries


def _check_entries(sysroot: Sysroot, deployments: list[Deployment]) -> list[str]:
    entries_dir = sysroot.path / "boot" / "loader" / "entries"
    paths = sorted(entries_dir.glob("*.conf")) if entries_dir.is_dir() else []
    if not paths:
        return ["there is no default boot entry (boot/loader/entries is empty)"] if deployments else []
    problems: list[str] = []
    versions: dict[str, str] = {}
    for path in paths:
        entry = bls.BlsEntry.load(path)
        version = entry.get("version") or ""
        if version in versions:
            problems.append(f"boot entries {versions[version]} and {path.name} share version {version!r}: "
                            "the default entry is ambiguous")
        versions[version] = path.name
        problems += [f"boot entry {path.name}: {p}" for p in _entry_problems(sysroot, entry)]
    return problems


def _entry_problems(sysroot: Sysroot, entry: bls.BlsEntry) -> list[str]:
    problems = [f"names {key} {value}, which is missing under /boot"
                for key, value in (("linux", entry.get("linux")), ("initrd", entry.get("initrd")))
                if (key == "linux" or value is not None) and not _boot_file_exists(sysroot, value)]
    args = bls.split_kargs(entry.get("options") or "")
    ostree_arg = next((a.split("=", 1)[1] for a in args if bls.karg_key(a) == "ostree"), None)
    if ostree_arg is None:
        return [*problems, "has no ostree= argument"]
    deploy_dir = (sysroot.path / ostree_arg.lstrip("/")).resolve()
    if not deploy_dir.is_dir():
        return [*problems, f"{ostree_arg} does not lead to a deployment"]
    return problems + _deployment_dir_problems(deploy_dir)


def _boot_file_exists(sysroot: Sysroot, value: str | None) -> bool:
    return value is not None and (sysroot.path / "boot" / value.lstrip("/")).is_file()


def _deployment_dir_problems(deploy_dir: Path) -> list[str]:
    problems = [f"deployment {deploy_dir.name} has no {sub}/" for sub in ("usr", "etc")
                if not (deploy_dir / sub).is_dir()]
    origin = deploy_dir.with_name(deploy_dir.name + ".origin")
    if not origin.is_file():
        return [*problems, f"deployment {deploy_dir.name} has no origin file"]
    try:
        Origin.from_keyfile(KeyFile.load(origin))
    except (StrataError, UnicodeDecodeError) as exc:
        problems.append(f"deployment {deploy_dir.name} has an unreadable origin: {exc}")
    return problems


# ---------------------------------------------------------------- the running and the staged deployment


def _check_booted(sysroot: Sysroot, booted: Deployment | None) -> list[str]:
    """The deployment a directory sysroot booted must survive every transaction (never on a real host's /)."""
    record = sysroot.path / "run" / "strata" / "booted"
    if not record.is_file() or booted is not None:
        return []
    stateroot, _, name = record.read_text().strip().partition(" ")
    deploy_dir = sysroot.path / "ostree" / "deploy" / stateroot / "deploy" / name
    where = "its directory is gone" if not deploy_dir.is_dir() else "it is no longer in the boot entries"
    return [f"the booted deployment {stateroot}:{name} was removed: {where}"]


def _check_staged_state(sysroot: Sysroot, deployments: list[Deployment]) -> list[str]:
    staged = next((d for d in deployments if d.staged), None)
    if staged is not None:
        return [f"{_label(staged)}: {p}" for p in _deployment_dir_problems(sysroot.deployment_dir(staged))]
    if (sysroot.path / STAGED_STATE).exists():
        return [f"{STAGED_STATE} names a deployment whose directory is missing"]
    return []


# ---------------------------------------------------------------- other stateroots


def _check_pending_unchanged(sysroot: Sysroot, before: dict[str, PendingSnapshot | None],
                             changed_stateroot: str | None) -> list[str]:
    now = snapshot_pending(sysroot)
    problems = []
    for stateroot, old in sorted(before.items()):
        if stateroot == changed_stateroot:
            continue
        new = now.get(stateroot)
        if new != old:
            problems.append(f"the pending deployment of stateroot {stateroot!r} changed although the write was "
                            f"to {changed_stateroot!r}: {_describe(old)} -> {_describe(new)}")
    return problems


def _describe(snapshot: PendingSnapshot | None) -> str:
    if snapshot is None:
        return "none"
    staged = " staged" if snapshot.staged else ""
    return (f"{snapshot.csum[:12]}.{snapshot.deployserial}{staged} kargs={' '.join(snapshot.kargs)!r} "
            f"origin={snapshot.origin.decode('utf-8', 'replace')!r}")


# ---------------------------------------------------------------- deep checks


def _check_repository(sysroot: Sysroot) -> list[str]:
    from strata.image.fsck import fsck  # only for a full check (slow to import on every verb)
    return [f"repository fsck: {p}" for p in fsck(sysroot.repo).problems]


def _check_dependencies(sysroot: Sysroot, deployments: list[Deployment]) -> list[str]:
    problems = []
    for dep in deployments:
        rpmdb = sysroot.deployment_dir(dep) / RPMDB_DIR
        if not (rpmdb / "rpmdb.sqlite").is_file():
            continue
        problems += [f"{_label(dep)}: {line}" for line in unsatisfied_dependencies(rpmdb)]
    return problems


def unsatisfied_dependencies(rpmdb: Path) -> list[str]:
    """What the real rpm reports as unsatisfied in the rpmdb directory `rpmdb` (usr/share/rpm of a tree).

    rpm runs on a copy: opening the database creates -shm/-wal files next to it, and a deployment's
    rpmdb.sqlite is a hardlink into the object store."""
    rpm = shutil.which("rpm")
    if rpm is None:
        raise StrataError("rpm is not installed: cannot check package dependencies")
    with tempfile.TemporaryDirectory(prefix="strata-rpmdb-") as tmp:
        root = Path(tmp)
        shutil.copytree(rpmdb, root / RPMDB_DIR, symlinks=True)
        proc = subprocess.run([rpm, "--root", str(root), "--dbpath", "/" + RPMDB_DIR, "-Va", "--nofiles",
                               "--nodigest", "--nosignature"], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return []
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    needed = [line for line in lines if " is needed by " in line]
    return needed or lines or [f"rpm -Va failed: {proc.stderr.strip()}"]
