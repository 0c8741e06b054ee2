"""A sysroot: stateroots, deployments, boot entries swapped atomically, the booted deployment (spec §18-§27).

The one commit point of every change to the deployment list is the rename of boot/loader (or, when only the
bootlinks change, of ostree/boot.B): everything before it is unreferenced scratch, everything after it is
cleanup that a later run can redo. A deployment that leaves the list between two cleanups (a replaced staged
deployment) is renamed into the trash, ostree/deploy/.trash, at the cost of one rename; the next cleanup
deletes what is there. The trash is outside every stateroot's deploy/ (ostree's cleanup refuses names there
that are not deployments) and on the same filesystem as the deployments."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from strata import fsroot
from strata.errors import InvalidInputError, LockedError, NotFoundError, StrataError
from strata.image import gvariant
from strata.image.fsutil import atomic_symlink, atomic_write, flock, fsync_dir, fsync_file
from strata.image.keyfile import KeyFile
from strata.image.objects import ObjectType
from strata.image.repo import Repo, RepoMode
from strata.sysroot import bls
from strata.sysroot.crashpoints import crash_point

_OS_RELEASE_LIMIT = 64 * 1024
_DEPLOY_NAME = re.compile(r"^([0-9a-f]{64})\.([0-9]+)$")
STAGED_STATE = "run/ostree/staged-deployment"
STAGED_LOCKED = "run/ostree/staged-deployment-locked"  # ostree's: shutdown leaves the staged deployment alone
DEPLOYMENT_RUNSTATE = "run/ostree/deployment-state"  # ostree's per-deployment transient state (unlocked-*)
BOOTED_CMDLINE = "run/strata/cmdline"
TRASH_DIR = "ostree/deploy/.trash"  # not a stateroot: no var/, and a name no stateroot can have
_SPARE_PREFIX = "spare-"
_SPARE_NAME = re.compile(r"^spare-([0-9a-f]{64})-[0-9a-f]{8}$")


@dataclass
class Deployment:
    stateroot: str
    csum: str
    serial: int
    bootcsum: str
    kargs: list[str] = field(default_factory=list)  # as in the boot entry, ostree= included
    staged: bool = False
    bootserial: int = 0
    kernel_version: str = ""
    overlay_initrds: list[str] = field(default_factory=list)  # SHA-256 names in boot/ostree/initramfs-overlays

    @property
    def name(self) -> str:
        return f"{self.csum}.{self.serial}"

    @property
    def key(self) -> tuple[str, str]:
        return self.stateroot, self.name


@dataclass(frozen=True)
class KernelFiles:
    version: str
    vmlinuz: Path
    initramfs: Path | None
    bootcsum: str


class Sysroot:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._repo: Repo | None = None

    # ------------------------------------------------------------ opening and creating

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Sysroot:
        root = Path(path)
        if not (root / "ostree" / "repo" / "config").is_file() or not (root / "ostree" / "deploy").is_dir():
            raise NotFoundError(f"{root} is not an initialized sysroot (run `strata admin init-fs {root}`)")
        return cls(root)

    @classmethod
    def init_fs(cls, path: str | os.PathLike[str]) -> Sysroot:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for name, mode in (("boot", 0o755), ("dev", 0o755), ("home", 0o755), ("proc", 0o755), ("root", 0o700),
                           ("run", 0o755), ("sys", 0o755), ("tmp", 0o1777)):
            (root / name).mkdir(exist_ok=True)
            os.chmod(root / name, mode)
        (root / "ostree" / "deploy").mkdir(parents=True, exist_ok=True)
        (root / "ostree" / "lock").touch()
        Repo.init(root / "ostree" / "repo", RepoMode.BARE)
        return cls(root)

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            self._repo = Repo.open(self.path / "ostree" / "repo")
        return self._repo

    def os_init(self, stateroot: str) -> None:
        validate_stateroot(stateroot)
        var = self.path / "ostree" / "deploy" / stateroot / "var"
        (var.parent / "deploy").mkdir(parents=True, exist_ok=True)
        var.mkdir(exist_ok=True)
        for sub, mode in (("lib", 0o755), ("log", 0o755), ("tmp", 0o1777)):
            (var / sub).mkdir(exist_ok=True)
            os.chmod(var / sub, mode)
        for link, target in (("lock", "../run/lock"), ("run", "../run")):
            if not (var / link).is_symlink():
                (var / link).symlink_to(target)

    def stateroots(self) -> list[str]:
        deploy = self.path / "ostree" / "deploy"
        return sorted(p.name for p in deploy.iterdir() if (p / "var").is_dir())

    def require_stateroot(self, stateroot: str) -> None:
        if stateroot not in self.stateroots():
            raise NotFoundError(f"stateroot '{stateroot}' not found (create it with `strata admin os-init`)")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        try:
            with flock(self.path / "ostree" / "lock", exclusive=True, wait=False, what="sysroot"):
                yield
        except LockedError:
            raise LockedError("sysroot is locked: another transaction is in progress") from None

    # ------------------------------------------------------------ paths

    def deployment_dir(self, dep: Deployment) -> Path:
        return self.path / "ostree" / "deploy" / dep.stateroot / "deploy" / dep.name

    def origin_path(self, dep: Deployment) -> Path:
        return self.deployment_dir(dep).with_name(dep.name + ".origin")

    def stateroot_var(self, stateroot: str) -> Path:
        return self.path / "ostree" / "deploy" / stateroot / "var"

    def read_origin(self, dep: Deployment) -> KeyFile:
        path = self.origin_path(dep)
        return KeyFile.load(path) if path.exists() else KeyFile()

    def write_origin(self, dep: Deployment, origin: KeyFile) -> None:
        origin.save(self.origin_path(dep))

    def is_pinned(self, dep: Deployment) -> bool:
        return self.read_origin(dep).get_bool("libostree-transient", "pinned", False)

    # ------------------------------------------------------------ reading the state

    @property
    def bootversion(self) -> int:
        link = self.path / "boot" / "loader"
        if not link.is_symlink():
            return 0
        return 1 if os.readlink(link) == "loader.1" else 0

    def subbootversion(self, bootversion: int) -> int:
        link = self.path / "ostree" / f"boot.{bootversion}"
        if not link.is_symlink():
            return 0
        return 1 if os.readlink(link).endswith(".1") else 0

    def deployments(self) -> list[Deployment]:
        """Staged (if any) first, then the boot entries' deployments in boot order."""
        listed = self._entry_deployments()
        staged = self.staged_deployment()
        return ([staged] if staged else []) + listed

    def _entry_deployments(self) -> list[Deployment]:
        entries_dir = self.path / "boot" / "loader" / "entries"
        if not entries_dir.is_dir():
            return []
        entries = [bls.BlsEntry.load(p) for p in sorted(entries_dir.glob("ostree-*.conf"))]
        result = []
        for entry in bls.sort_entries(entries):
            args = bls.split_kargs(entry.get("options") or "")
            ostree_arg = next((a.split("=", 1)[1] for a in args if bls.karg_key(a) == "ostree"), None)
            if ostree_arg is None:
                continue
            dep = self._deployment_from_bootlink(ostree_arg)
            dep.kargs = args  # ostree= stays where it is; it is rewritten in place for each entry
            dep.overlay_initrds = bls.overlay_initrds(entry)
            result.append(dep)
        return result

    def _deployment_from_bootlink(self, ostree_arg: str) -> Deployment:
        link = self.path / ostree_arg.lstrip("/")
        parts = Path(ostree_arg).parts  # /, ostree, boot.B, STATEROOT, BOOTCSUM, SERIAL
        if len(parts) != 6:
            raise StrataError(f"malformed ostree= boot argument: {ostree_arg}")
        try:
            target = os.readlink(link)
        except OSError:
            raise StrataError(f"boot entry names a missing bootlink: {ostree_arg}") from None
        match = _DEPLOY_NAME.match(Path(target).name)
        if match is None:
            raise StrataError(f"bootlink {ostree_arg} points to {target}, not a deployment")
        return Deployment(parts[3], match.group(1), int(match.group(2)), parts[4], bootserial=int(parts[5]))

    def staged_deployment(self) -> Deployment | None:
        path = self.path / STAGED_STATE
        if not path.exists():
            return None
        state = dict(gvariant.decode("a{sv}", path.read_bytes()))
        target = dict(state["target"].value)
        name = target["name"].value
        match = _DEPLOY_NAME.match(name)
        if match is None:
            raise StrataError(f"malformed staged deployment state: {name}")
        kargs = list(state["kargs"].value) if "kargs" in state else []
        dep = Deployment(target["osname"].value, match.group(1), int(match.group(2)), target["bootcsum"].value,
                         kargs, staged=True)
        if "overlay-initrds" in state:
            dep.overlay_initrds = list(state["overlay-initrds"].value)
        if not self.deployment_dir(dep).is_dir():
            return None
        return dep

    def staged_merge_name(self) -> str | None:
        path = self.path / STAGED_STATE
        if not path.exists():
            return None
        state = dict(gvariant.decode("a{sv}", path.read_bytes()))
        if "merge-deployment" not in state:
            return None
        return str(dict(state["merge-deployment"].value)["name"].value)

    def booted_cmdline(self) -> str | None:
        """The kernel command line the running system booted with: /proc/cmdline on a real OSTree host,
        the one `strata admin boot` recorded for a sysroot that is a directory."""
        if self.path.resolve() == Path("/") and Path("/run/ostree-booted").exists():
            return Path("/proc/cmdline").read_text()
        recorded = self.path / BOOTED_CMDLINE
        return recorded.read_text() if recorded.exists() else None

    def booted(self) -> Deployment | None:
        cmdline = self.booted_cmdline()
        if cmdline is None:
            return None
        value = next((a.split("=", 1)[1] for a in cmdline.split() if bls.karg_key(a) == "ostree"), None)
        if value is None:
            return None
        name_file = self.path / "run" / "strata" / "booted"
        booted_name = name_file.read_text().strip() if name_file.exists() else None
        for dep in self._entry_deployments():
            if booted_name is not None and f"{dep.stateroot} {dep.name}" == booted_name:
                return dep
        return None

    # ------------------------------------------------------------ kernels

    def find_kernel(self, deploy_dir: Path) -> KernelFiles:
        """usr/lib/modules/VERSION/vmlinuz (and initramfs) of a deployment, resolved inside it: a symlink in
        the tree can never name a host file as the kernel."""
        modules = fsroot.real_path_in_root(deploy_dir, "usr/lib/modules")
        names = sorted(os.listdir(modules)) if modules is not None and modules.is_dir() else []
        found = [(name, vmlinuz) for name in names
                 if (vmlinuz := _regular_file_in(deploy_dir, f"usr/lib/modules/{name}/vmlinuz")) is not None]
        if not found:
            raise StrataError("no kernel found in the tree (usr/lib/modules/VERSION/vmlinuz)")
        version, vmlinuz = found[0]
        initramfs = next((path for n in ("initramfs.img", "initramfs")
                          if (path := _regular_file_in(deploy_dir, f"usr/lib/modules/{version}/{n}")) is not None),
                         None)
        digest = hashlib.sha256()
        for path in (vmlinuz, initramfs):
            if path is not None:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
        return KernelFiles(version, vmlinuz, initramfs, digest.hexdigest())

    def boot_dir(self, stateroot: str, bootcsum: str) -> Path:
        return self.path / "boot" / "ostree" / f"{stateroot}-{bootcsum}"

    def check_boot_space(self, deployments: list[Deployment]) -> None:
        """Refuse before writing anything when the kernels to install do not fit in /boot."""
        needed = 0
        boot = self.path / "boot"
        for dep in deployments:
            if self.boot_dir(dep.stateroot, dep.bootcsum).is_dir():
                continue
            kernel = self.find_kernel(self.deployment_dir(dep))
            for path in (kernel.vmlinuz, kernel.initramfs):
                if path is not None and path.stat().st_dev != boot.stat().st_dev:
                    needed += path.stat().st_size
        if needed == 0:
            return
        vfs = os.statvfs(boot)
        free = vfs.f_bavail * vfs.f_frsize
        if needed + 64 * 1024 > free:
            raise StrataError(f"not enough space in /boot for the new kernel and initramfs: need {needed} bytes, "
                              f"{free} free; remove old deployments (`strata admin cleanup`, `strata admin undeploy`, "
                              "`strata admin pin --unpin`) and try again")

    def _install_kernel(self, dep: Deployment) -> KernelFiles:
        kernel = self.find_kernel(self.deployment_dir(dep))
        target = self.boot_dir(dep.stateroot, dep.bootcsum)
        if target.is_dir():
            return kernel
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _link_or_copy(kernel.vmlinuz, tmp / f"vmlinuz-{kernel.version}")
        if kernel.initramfs is not None:
            _link_or_copy(kernel.initramfs, tmp / f"initramfs-{kernel.version}.img")
        for path in tmp.iterdir():
            fsync_file(path)
        os.rename(tmp, target)
        fsync_dir(target.parent)
        return kernel

    # ------------------------------------------------------------ writing the deployment list

    def write_deployments(self, new: list[Deployment], *, prune_repo: bool = True) -> tuple[bool, str]:
        """Make new (non-staged deployments, boot order) the boot configuration; then clean up.
        Returns (whether a new bootversion was written, the 'boot.B.S' text)."""
        current = self._entry_deployments()
        self.check_boot_space(new)
        bootversion = self.bootversion
        numbered = _assign_bootserials(new)
        same_config = _same_boot_config(current, numbered, self)
        if same_config and current:
            target_b = bootversion
            target_s = 1 - self.subbootversion(bootversion)
        else:
            target_b = 1 - bootversion
            other = self.path / "ostree" / f"boot.{target_b}"
            target_s = 1 - (self.subbootversion(target_b) if other.is_symlink() else 0)
        kernels = {dep.key: self._install_kernel(dep) for dep in numbered}
        crash_point("after-kernels")
        self._write_bootlinks(numbered, target_b, target_s)
        self._write_deployment_refs(numbered, target_b, target_s)
        crash_point("after-bootlinks")
        if same_config and current:
            atomic_symlink(f"boot.{target_b}.{target_s}", self.path / "ostree" / f"boot.{target_b}")
            crash_point("after-subbootversion-swap")
        else:
            atomic_symlink(f"boot.{target_b}.{target_s}", self.path / "ostree" / f"boot.{target_b}")
            self._write_entries(numbered, kernels, target_b)
            crash_point("before-loader-swap")
            os.sync()
            atomic_symlink(f"loader.{target_b}", self.path / "boot" / "loader")
            crash_point("after-loader-swap")
        if not (self.path / "boot" / "boot").is_symlink():
            (self.path / "boot" / "boot").symlink_to(".")
        os.utime(self.path / "ostree" / "deploy")
        self.cleanup(prune_repo=prune_repo)
        return not (same_config and current), f"boot.{target_b}.{target_s}"

    def _write_bootlinks(self, deps: list[Deployment], bootversion: int, subboot: int) -> None:
        top = self.path / "ostree" / f"boot.{bootversion}.{subboot}"
        shutil.rmtree(top, ignore_errors=True)
        for dep in deps:
            link = top / dep.stateroot / dep.bootcsum / str(dep.bootserial)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"../../../deploy/{dep.stateroot}/deploy/{dep.name}")
        top.mkdir(parents=True, exist_ok=True)
        fsync_dir(top)

    def _write_deployment_refs(self, deps: list[Deployment], bootversion: int, subboot: int) -> None:
        staged = self.staged_deployment()
        everything = ([staged] if staged and staged.key not in {d.key for d in deps} else []) + deps
        for index, dep in enumerate(everything):
            self.repo.set_ref(f"ostree/{bootversion}/{subboot}/{index}", dep.csum)

    def _write_entries(self, deps: list[Deployment], kernels: dict[tuple[str, str], KernelFiles],
                       bootversion: int) -> None:
        loader = self.path / "boot" / f"loader.{bootversion}"
        shutil.rmtree(loader, ignore_errors=True)
        entries = loader / "entries"
        entries.mkdir(parents=True)
        several_stateroots = len({d.stateroot for d in deps}) > 1
        total = len(deps)
        for index, dep in enumerate(deps):
            kernel = kernels[dep.key]
            number = total - index
            bootdir = f"/ostree/{dep.stateroot}-{dep.bootcsum}"
            ostree_arg = f"/ostree/boot.{bootversion}/{dep.stateroot}/{dep.bootcsum}/{dep.bootserial}"
            suffix = f"ostree:{dep.stateroot}:{index}" if several_stateroots else f"ostree:{index}"
            entry = bls.BlsEntry([
                ("title", f"{self._os_title(dep)} ({suffix})"),
                ("version", str(number)),
                ("options", " ".join(bls.with_ostree_karg(list(dep.kargs), ostree_arg))),
                ("linux", f"{bootdir}/vmlinuz-{kernel.version}"),
            ])
            if kernel.initramfs is not None:
                entry.fields.append(("initrd", f"{bootdir}/initramfs-{kernel.version}.img"))
            entry = bls.with_overlay_initrds(entry, dep.overlay_initrds)
            atomic_write(entries / f"ostree-{number}-{dep.stateroot}.conf", entry.serialize().encode())
        fsync_dir(entries)

    def _os_title(self, dep: Deployment) -> str:
        root = self.deployment_dir(dep)
        fields: dict[str, str] = {}
        for candidate in ("usr/lib/os-release", "etc/os-release"):
            data = fsroot.read_in_root(root, candidate, _OS_RELEASE_LIMIT)
            if data is not None:
                for line in data.decode("utf-8", "replace").splitlines():
                    key, sep, value = line.partition("=")
                    if sep:
                        fields[key.strip()] = value.strip().strip('"')
                break
        title = fields.get("PRETTY_NAME") or fields.get("ID") or "ostree"
        version = self.commit_version(dep.csum)
        if version and version not in title:
            title = f"{title} {version}"
        return title

    def commit_version(self, csum: str) -> str | None:
        try:
            return self.repo.load_commit(csum).version
        except NotFoundError:
            return None

    # ------------------------------------------------------------ cleanup

    def cleanup(self, *, prune_repo: bool = True) -> None:
        """Remove what the current boot configuration no longer references (spec §26.3)."""
        bootversion = self.bootversion
        subboot = self.subbootversion(bootversion)
        listed = self.deployments()
        keep = {d.key for d in listed}
        booted = self.booted()
        if booted:
            keep.add(booted.key)
        for name in (f"loader.{1 - bootversion}", "loader.tmp"):
            shutil.rmtree(self.path / "boot" / name, ignore_errors=True)
        for name in (f"boot.{1 - bootversion}", f"boot.{1 - bootversion}.0", f"boot.{1 - bootversion}.1",
                     f"boot.{bootversion}.{1 - subboot}"):
            target = self.path / "ostree" / name
            if target.is_symlink():
                target.unlink()
            else:
                shutil.rmtree(target, ignore_errors=True)
        crash_point("cleanup-midway")
        self._remove_unlisted_deployments(keep)
        self.empty_trash()
        used_boot = {f"{d.stateroot}-{d.bootcsum}" for d in listed}
        used_boot.add(Path(bls.OVERLAY_INITRDS_DIR).name)
        boot_ostree = self.path / "boot" / "ostree"
        if boot_ostree.is_dir():
            for entry in boot_ostree.iterdir():
                if entry.name not in used_boot:
                    _remove_tree(entry)
        self._remove_unused_overlay_initrds(listed)
        for ref in list(self.repo.list_refs("ostree", remotes=False)):
            parts = ref.split("/")
            if len(parts) != 4:
                continue
            stale_version = (parts[1], parts[2]) != (str(bootversion), str(subboot))
            if stale_version or int(parts[3]) >= len(listed):
                self.repo.set_ref(ref, None)
        if prune_repo:
            from strata.image.prune import PruneOptions, prune
            prune(self.repo, PruneOptions(refs_only=True, depth=0))

    def _remove_unused_overlay_initrds(self, listed: list[Deployment]) -> None:
        used = {f"{checksum}.img" for dep in listed for checksum in dep.overlay_initrds}
        overlays = self.path / "boot" / bls.OVERLAY_INITRDS_DIR
        if overlays.is_dir():
            for entry in overlays.iterdir():
                if entry.name not in used:
                    _remove_tree(entry)

    def _remove_unlisted_deployments(self, keep: set[tuple[str, str]]) -> None:
        for stateroot in self.stateroots():
            deploy_dir = self.path / "ostree" / "deploy" / stateroot / "deploy"
            if not deploy_dir.is_dir():
                continue
            for entry in deploy_dir.iterdir():
                name = entry.name.removesuffix(".origin")
                if _DEPLOY_NAME.match(name) and (stateroot, name) not in keep:
                    _remove_tree(entry)

    # ------------------------------------------------------------ the trash

    @property
    def trash_dir(self) -> Path:
        return self.path / TRASH_DIR

    def trash_deployment(self, dep: Deployment, *, spare: bool = False) -> None:
        """Take an unreferenced deployment out of its stateroot by a rename (deleting its tree costs about as
        much as checking it out); the next cleanup() deletes it. Its origin file goes last: a crash in
        between leaves an origin without a directory, which cleanup removes too. `spare`: the tree is still
        exactly the checkout of its commit plus the /etc copied at deploy time (a staged deployment, never
        booted nor finalized), so the next deployment may be patched from it (take_spare_tree)."""
        source = self.deployment_dir(dep)
        if source.is_dir() and not source.is_symlink():
            self.trash_dir.mkdir(exist_ok=True)
            label = f"{_SPARE_PREFIX}{dep.csum}" if spare else f"{dep.stateroot}-{dep.name}"
            target = self.trash_dir / f"{label}-{secrets.token_hex(4)}"
            try:
                _rename_dir(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _remove_tree(source)  # a stateroot on a filesystem of its own: no cheap way out
        with contextlib.suppress(FileNotFoundError):
            self.origin_path(dep).unlink()

    def take_spare_tree(self) -> tuple[Path, str] | None:
        """A spare tree from the trash and the commit it is a checkout of, renamed first so that a crash
        while it is being changed leaves it as plain trash; None when there is none."""
        trash = self.trash_dir
        if not trash.is_dir() or trash.is_symlink():
            return None
        for entry in sorted(trash.iterdir()):
            match = _SPARE_NAME.match(entry.name)
            if match is not None and entry.is_dir() and not entry.is_symlink():
                taken = trash / f"taken-{secrets.token_hex(4)}"
                os.rename(entry, taken)
                return taken, match.group(1)
        return None

    def empty_trash(self) -> None:
        trash = self.trash_dir
        if not trash.is_dir() or trash.is_symlink():
            return
        for entry in trash.iterdir():
            _remove_tree(entry)
        with contextlib.suppress(OSError):
            trash.rmdir()

    # ------------------------------------------------------------ staging

    def write_staged_state(self, dep: Deployment, merge: Deployment | None, kargs: list[str] | None) -> None:
        def ident(d: Deployment) -> gvariant.Variant:
            return gvariant.Variant("a{sv}", [("name", gvariant.Variant("s", d.name)),
                                              ("osname", gvariant.Variant("s", d.stateroot)),
                                              ("bootcsum", gvariant.Variant("s", d.bootcsum))])
        state: list[tuple[str, gvariant.Variant]] = [("target", ident(dep))]
        if merge is not None:
            state.append(("merge-deployment", ident(merge)))
        if kargs is not None:
            state.append(("kargs", gvariant.Variant("as", kargs)))
        if dep.overlay_initrds:
            state.append(("overlay-initrds", gvariant.Variant("as", dep.overlay_initrds)))
        path = self.path / STAGED_STATE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, gvariant.encode("a{sv}", state))

    def clear_staged_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / STAGED_STATE).unlink()
        self.set_finalization_locked(False)

    @property
    def finalization_locked(self) -> bool:
        return (self.path / STAGED_LOCKED).exists()

    def set_finalization_locked(self, locked: bool) -> None:
        path = self.path / STAGED_LOCKED
        if locked:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, b"", fsync=False)
        else:
            path.unlink(missing_ok=True)

    def runstate_dir(self, dep: Deployment) -> Path:
        return self.path / DEPLOYMENT_RUNSTATE / dep.name

    def unlocked_state(self, dep: Deployment) -> str:
        """ostree's unlocked state of a deployment: "none", or "transient"/"development" until the next boot."""
        for state in ("development", "transient"):
            if (self.runstate_dir(dep) / f"unlocked-{state}").exists():
                return state
        return "none"

    def next_serial(self, stateroot: str, csum: str) -> int:
        deploy_dir = self.path / "ostree" / "deploy" / stateroot / "deploy"
        serials = [int(m.group(2)) for p in deploy_dir.iterdir() if (m := _DEPLOY_NAME.match(p.name))
                   and m.group(1) == csum] if deploy_dir.is_dir() else []
        return max(serials) + 1 if serials else 0

    def find(self, key: tuple[str, str]) -> Deployment | None:
        return next((d for d in self.deployments() if d.key == key), None)

    def has_commit(self, csum: str) -> bool:
        return self.repo.has_object(csum, ObjectType.COMMIT)


def validate_stateroot(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name):
        raise InvalidInputError(f"invalid stateroot name: {name!r}")


def _assign_bootserials(deps: list[Deployment]) -> list[Deployment]:
    counters: dict[tuple[str, str], int] = {}
    result = []
    for dep in deps:
        key = (dep.stateroot, dep.bootcsum)
        result.append(replace(dep, bootserial=counters.get(key, 0), staged=False))
        counters[key] = counters.get(key, 0) + 1
    return result


def _same_boot_config(current: list[Deployment], new: list[Deployment], sysroot: Sysroot) -> bool:
    if len(current) != len(new):
        return False
    for old, dep in zip(current, new, strict=True):
        same_args = bls.without_ostree_karg(old.kargs) == bls.without_ostree_karg(dep.kargs)
        if not same_args or (old.stateroot, old.bootcsum) != (dep.stateroot, dep.bootcsum):
            return False
        if sysroot.commit_version(old.csum) != sysroot.commit_version(dep.csum):
            return False
        if old.overlay_initrds != dep.overlay_initrds:
            return False
    return True


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _clear_immutable(path)
        with contextlib.suppress(OSError):
            fsroot.remove_tree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _rename_dir(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except PermissionError:
        _clear_immutable(source)  # ostree marks deployment roots immutable, which forbids renaming them too
        os.rename(source, target)


def _regular_file_in(root: Path, relpath: str) -> Path | None:
    """The physical path of relpath resolved inside root, if it is a regular file."""
    path = fsroot.real_path_in_root(root, relpath)
    return path if path is not None and stat.S_ISREG(path.lstat().st_mode) else None


def _clear_immutable(path: Path) -> None:
    """Deployment roots written by ostree carry the immutable attribute; chattr is the one tool for it."""
    if shutil.which("chattr"):
        import subprocess
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)

