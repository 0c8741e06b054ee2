"""rpm-ostree's initramfs controls (spec `initramfs`, `initramfs-etc`).

`initramfs --enable/--disable` records `[rpmostree] regenerate-initramfs` and `initramfs-args` in the origin; every
deployment built from such an origin gets an initramfs made by the tree's own dracut, run in the script sandbox
on the assembled tree with the machine's /etc, and written into usr/lib/modules/KVER/initramfs.img of the new
commit (so the boot checksum, and the boot entry, follow it).

`initramfs-etc --track` records `[rpmostree] initramfs-etc`; at every deployment the tracked files are read from
the merge deployment's /etc (never through a symlink: a symlink is packed as a symlink), packed as a gzipped
newc cpio, staged as boot/ostree/initramfs-overlays/SHA256.img and listed by the boot entry as an extra
`initrd`, as ostree's overlay initrds are."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from strata import bwrap, fsroot
from strata.core.assemble import LazyTree, write_edited_tree
from strata.core.client import Change, ChangeOptions, Context, Outcome, open_context, run_verb
from strata.core.origin import Origin
from strata.core.transaction import Progress, Transaction
from strata.errors import InvalidInputError, StrataError
from strata.image.checkout import checkout_tree
from strata.image.commit import CommitRequest, write_commit
from strata.image.fsutil import atomic_write
from strata.image.objects import FileMeta
from strata.image.repo import Repo
from strata.packages import scripts
from strata.sysroot import bls
from strata.sysroot.sysroot import Deployment, Sysroot

Log = Callable[[str], None]
DRACUT_PATHS = ("usr/bin/dracut", "usr/sbin/dracut")
_ETC_FILE_LIMIT = 64 * 1024 * 1024
_ETC_TOTAL_LIMIT = 256 * 1024 * 1024


# ---------------------------------------------------------------- the state shown without options


@dataclass(frozen=True)
class InitramfsState:
    regenerate: bool
    args: tuple[str, ...]
    etc: tuple[str, ...]


def current_state(sysroot: Sysroot, stateroot: str | None) -> InitramfsState:
    """What the stateroot's next deployment does: its merge deployment's origin."""
    origin = open_context(sysroot, stateroot).origin()
    return InitramfsState(origin.regenerate_initramfs, origin.initramfs_args, origin.initramfs_etc)


# ---------------------------------------------------------------- `initramfs --enable/--disable`


def set_regeneration(sysroot: Sysroot, stateroot: str | None, enable: bool, args: Sequence[str], progress: Progress,
                     options: ChangeOptions | None = None) -> Outcome:
    words = ["--enable" if enable else "--disable", *(f"--arg={a}" for a in args)]
    return run_verb(sysroot, stateroot, "initramfs", words, progress, _Regeneration(enable, tuple(args)), options)


@dataclass
class _Regeneration:
    enable: bool
    args: tuple[str, ...]

    def __call__(self, txn: Transaction, ctx: Context) -> Change:
        if not self.enable and self.args:
            raise InvalidInputError("Cannot simultaenously specify --disable and --arg")
        origin = ctx.origin()
        # As rpm-ostree: the arguments are not compared; giving any means "run dracut again".
        if origin.regenerate_initramfs == self.enable and not origin.initramfs_args and not self.args:
            raise StrataError(f"initramfs regeneration state is already {'enabled' if self.enable else 'disabled'}")
        if self.enable and origin.initramfs_etc:
            raise StrataError("initramfs regeneration and /etc overlay not compatible; use dracut arg -I instead")
        return Change(origin.evolve(regenerate_initramfs=self.enable, initramfs_args=self.args if self.enable else ()),
                      force_new=True)


def regenerate_in_commit(repo: Repo, commit: str, args: Sequence[str], deployment_root: Path, log: Log) -> str:
    """A commit like `commit` whose kernel's initramfs.img is the one the tree's own dracut makes, with the
    /etc of deployment_root (the merge deployment) as the machine configuration dracut reads."""
    loaded = repo.load_commit(commit)
    with tempfile.TemporaryDirectory(prefix="initramfs-", dir=repo.tmp_dir) as work:
        rootfs = Path(work) / "rootfs"
        checkout_tree(repo, (loaded.root_tree, loaded.root_meta), rootfs)
        kernel = _kernel_version(rootfs)
        image = f"usr/lib/modules/{kernel}/initramfs.img"
        _run_dracut(rootfs, deployment_root, kernel, image, args, log)
        built = fsroot.real_path_in_root(rootfs, image)
        if built is None or not stat.S_ISREG(built.lstat().st_mode) or built.lstat().st_size == 0:
            raise StrataError(f"dracut did not write /{image}")
        tree = LazyTree.of_commit(repo, commit)
        modules = tree.lookup_dir(f"usr/lib/modules/{kernel}")
        if modules is None:
            raise StrataError(f"the commit has no /usr/lib/modules/{kernel}")
        with repo.lock():
            modules.files["initramfs.img"] = repo.write_content_from_file(FileMeta(0, 0, 0o100644), built,
                                                                          built.lstat().st_size)
            root = write_edited_tree(repo, tree)
            metadata = [(key, value.type, value.value) for key, value in loaded.metadata]
            new = write_commit(repo, root, CommitRequest(subject=loaded.subject, body=loaded.body,
                                                         timestamp=loaded.timestamp, metadata=metadata,
                                                         parent=loaded.parent))
            repo.sync()
    log(f"Generating initramfs... done ({kernel})")
    return new


def _kernel_version(rootfs: Path) -> str:
    modules = fsroot.real_path_in_root(rootfs, "usr/lib/modules")
    names = sorted(os.listdir(modules)) if modules is not None and modules.is_dir() else []
    found = [name for name in names if fsroot.is_file_in_root(rootfs, f"usr/lib/modules/{name}/vmlinuz")]
    if not found:
        raise StrataError("Cannot regenerate the initramfs: no kernel in the tree (usr/lib/modules/VERSION/vmlinuz)")
    return found[0]


def _run_dracut(rootfs: Path, deployment_root: Path, kernel: str, image: str, args: Sequence[str], log: Log) -> None:
    dracut = next((f"/{p}" for p in DRACUT_PATHS if fsroot.is_file_in_root(rootfs, p)), None)
    if dracut is None:
        raise StrataError("Cannot regenerate the initramfs: the tree has no dracut (/usr/bin/dracut); install "
                          "dracut, or turn regeneration off with `strata initramfs --disable`")
    box = scripts.sandbox_for(rootfs)  # writes go through an overlay, never into the checkout's hardlinks
    fsroot.require_real_dir(deployment_root, "etc")
    box = replace(box, tree_binds=[b for b in box.tree_binds if b[1] != "/etc"],
                  ro_binds=[*box.ro_binds, (str(deployment_root / "etc"), "/etc")])
    argv = [dracut, "--force", "--tmpdir", "/tmp", *args, f"/{image}", kernel]
    outcome = bwrap.run(box, argv, on_line=lambda line: log(f"dracut: {line}"), timeout=scripts.script_timeout())
    if outcome.timed_out:
        raise StrataError(f"dracut timed out after {scripts.script_timeout():g} s")
    if outcome.returncode != 0:
        raise StrataError(f"dracut failed (exit {outcome.returncode}): {outcome.last_line or 'no output'}")


# ---------------------------------------------------------------- `initramfs-etc`


@dataclass(frozen=True)
class EtcRequest:
    track: tuple[str, ...] = ()
    untrack: tuple[str, ...] = ()
    untrack_all: bool = False
    force_sync: bool = False

    @property
    def empty(self) -> bool:
        return not (self.track or self.untrack or self.untrack_all or self.force_sync)

    def args(self) -> list[str]:
        return ([f"--track={p}" for p in self.track] + [f"--untrack={p}" for p in self.untrack]
                + (["--untrack-all"] if self.untrack_all else []) + (["--force-sync"] if self.force_sync else []))


def track_etc(sysroot: Sysroot, stateroot: str | None, request: EtcRequest, progress: Progress,
              options: ChangeOptions | None = None) -> Outcome:
    """A new deployment whose origin tracks the changed set of files (outcome.changed is False for "No changes.")."""
    for path in request.track:
        etc_relpath(path)
    return run_verb(sysroot, stateroot, "initramfs-etc", request.args(), progress, _EtcTracking(request), options)


@dataclass
class _EtcTracking:
    request: EtcRequest

    def __call__(self, txn: Transaction, ctx: Context) -> Change | None:
        origin = ctx.origin()
        tracked = [] if self.request.untrack_all else [p for p in origin.initramfs_etc
                                                       if p not in self.request.untrack]
        tracked += [p for p in self.request.track if p not in tracked]
        if tuple(tracked) == origin.initramfs_etc and not self.request.force_sync:
            return None
        if tracked and origin.regenerate_initramfs:
            raise StrataError("initramfs regeneration and /etc overlay not compatible; use dracut arg -I instead")
        return Change(origin.evolve(initramfs_etc=tuple(tracked)), force_new=True)


def etc_relpath(path: str) -> str:
    """The canonical path below /etc that a tracked path names (relative to /etc)."""
    if not path.startswith("/etc/"):
        raise InvalidInputError(f"Path outside /etc forbidden: {path}")
    parts = path.removeprefix("/etc/").split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in path:
        raise InvalidInputError(f"invalid path {path}: must be canonical")
    return "/".join(parts)


def overlay_initrds_for(sysroot: Sysroot, merge: Deployment, origin: Origin) -> list[str]:
    """The overlay initrds a deployment of origin gets: none, or the tracked files of merge's /etc, staged."""
    if not origin.initramfs_etc:
        return []
    data = etc_overlay_cpio(sysroot.deployment_dir(merge) / "etc", origin.initramfs_etc)
    return [stage_overlay_initrd(sysroot, data)]


def stage_overlay_initrd(sysroot: Sysroot, data: bytes) -> str:
    """Write an overlay initrd under boot/ostree/initramfs-overlays (temporary file + rename); its SHA-256."""
    checksum = hashlib.sha256(data).hexdigest()
    target = sysroot.path / "boot" / bls.OVERLAY_INITRDS_DIR / f"{checksum}.img"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.is_symlink():
        atomic_write(target, data)
    return checksum


@dataclass(frozen=True)
class CpioEntry:
    name: str  # relative to the archive root, e.g. etc/foo.conf
    mode: int  # st_mode: file type and permissions
    data: bytes = b""  # file content, or a symlink's target


def etc_overlay_cpio(etc: Path, tracked: Sequence[str]) -> bytes:
    """The gzipped newc archive of the tracked paths (directories recursively) and their parent directories."""
    entries: dict[str, CpioEntry] = {"etc": CpioEntry("etc", stat.S_IFDIR | 0o755)}
    budget = [_ETC_TOTAL_LIMIT]
    etc_fd = os.open(etc, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for path in tracked:
            _gather(etc_fd, etc_relpath(path), entries, budget)
    finally:
        os.close(etc_fd)
    return gzip.compress(newc_archive(entries[name] for name in sorted(entries)), compresslevel=1, mtime=0)


def _gather(etc_fd: int, relpath: str, entries: dict[str, CpioEntry], budget: list[int]) -> None:
    """Add relpath (below /etc) to entries; every component is opened without following a symlink."""
    *parents, last = relpath.split("/")
    fds = [os.dup(etc_fd)]
    try:
        walked = "etc"
        for part in parents:
            st = _lstat_at(fds[-1], part, f"/{walked}/{part}")
            walked = f"{walked}/{part}"
            if not stat.S_ISDIR(st.st_mode):
                raise StrataError(f"/{walked} is not a directory (symlinks are not followed): /etc/{relpath}")
            entries.setdefault(walked, CpioEntry(walked, st.st_mode))
            fds.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1]))
        _add_entry(fds[-1], last, f"{walked}/{last}", entries, budget)
    finally:
        for fd in fds:
            os.close(fd)


def _lstat_at(dir_fd: int, name: str, shown: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise StrataError(f"{shown}: no such file in the deployment's /etc") from None


def _add_entry(dir_fd: int, name: str, archived: str, entries: dict[str, CpioEntry], budget: list[int]) -> None:
    st = _lstat_at(dir_fd, name, f"/{archived}")
    if stat.S_ISLNK(st.st_mode):
        entries[archived] = CpioEntry(archived, st.st_mode, os.fsencode(os.readlink(name, dir_fd=dir_fd)))
    elif stat.S_ISREG(st.st_mode):
        entries[archived] = CpioEntry(archived, st.st_mode, _read_regular(dir_fd, name, archived, budget))
    elif stat.S_ISDIR(st.st_mode):
        entries[archived] = CpioEntry(archived, st.st_mode)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            for child in sorted(os.listdir(fd)):
                _add_entry(fd, child, f"{archived}/{child}", entries, budget)
        finally:
            os.close(fd)
    else:
        raise StrataError(f"/{archived}: not a regular file, symlink or directory")


def _read_regular(dir_fd: int, name: str, archived: str, budget: list[int]) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise StrataError(f"/{archived}: changed while it was read")
        data = f.read(_ETC_FILE_LIMIT + 1)
    budget[0] -= len(data)
    if len(data) > _ETC_FILE_LIMIT or budget[0] < 0:
        raise StrataError(f"/{archived}: too large for the initramfs overlay")
    return data


def newc_archive(entries: Iterator[CpioEntry] | Sequence[CpioEntry]) -> bytes:
    """A cpio archive in the "new ASCII" (newc) format the kernel unpacks, owned by root, mtime 0."""
    out = bytearray()
    for inode, entry in enumerate(entries, start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _newc_member(entry.name, entry.data, inode, entry.mode, nlink)
    out += _newc_member("TRAILER!!!", b"", 0, 0, 1)
    return bytes(out)


def _newc_member(name: str, data: bytes, inode: int, mode: int, nlink: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    member = header + encoded
    member += b"\0" * (-len(member) % 4)
    return member + data + b"\0" * (-len(data) % 4)
