"""Running a command inside a tree through bubblewrap: the one place that builds bwrap command lines.

The tree is shown entry by entry on a private tmpfs root (its top-level directories bound, its top-level
symlinks recreated), so that /proc, /dev, /run and /tmp are always real mount points even when the tree's
own /tmp is a symlink into /sysroot, and a mount point is never created through a symlink of the tree.
Every sandbox gets its own pid, ipc, uts (and, unless asked, network) namespaces, a read-only /proc/sys,
and only the capabilities package scripts need; without a terminal it also gets /dev/null as stdin, a new
session (no TIOCSTI into the caller's terminal) and a time limit after which the whole sandbox is killed."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from strata import fsroot, overlay
from strata.errors import StrataError

DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What rpm scripts need (owners, modes, file capabilities, setuid helpers, chroot): rpm-ostree's set, a
# subset of Docker's defaults. CAP_SYS_ADMIN, CAP_NET_*, CAP_MKNOD, CAP_SYS_MODULE and the rest are dropped.
SCRIPT_CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
                       "CAP_SETUID", "CAP_SETPCAP", "CAP_SYS_CHROOT", "CAP_SETFCAP")
# Writable kernel interfaces under /proc that must stay read-only whatever the capabilities.
_PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger")
# Top-level names the sandbox always provides itself.
_OWN_TOP_LEVEL = frozenset({"proc", "dev", "run", "tmp", "sys"})
_MAX_LINE = 64 * 1024

LineSink = Callable[[str], None]


@dataclass
class Sandbox:
    """What the command sees: the tree as /, extra mounts, environment, namespaces."""

    root: Path
    tree_binds: list[tuple[str, str]] = field(default_factory=list)  # (directory of the tree, path inside), rw
    binds: list[tuple[str, str]] = field(default_factory=list)  # (host path, path inside), read-write
    ro_binds: list[tuple[str, str]] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (path inside a tmpfs, content)
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (target, path inside)
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    root_writable: bool = True
    overlay: bool = False  # writes land in an overlay that is folded back into root (never into hardlinks)
    terminal: bool = False  # keep the caller's stdin and terminal (the admin's own `admin run`)
    cwd: str = "/"


@dataclass(frozen=True)
class Outcome:
    returncode: int
    last_line: str
    timed_out: bool = False


def with_file(box: Sandbox, path: str, content: bytes) -> Sandbox:
    """The same sandbox with one more file (e.g. a script) placed inside it."""
    return replace(box, files=[*box.files, (path, content)])


def bwrap_path() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise StrataError("bubblewrap (bwrap) is not installed")
    return found


def command_line(box: Sandbox, argv: Sequence[str], view: Path | None = None) -> list[str]:
    """The bwrap argv; view is where the tree is seen from (the overlay's mount point, or root)."""
    shown = view or box.root
    args = [bwrap_path(), "--die-with-parent", "--unshare-pid", "--unshare-uts", "--unshare-ipc",
            "--unshare-cgroup-try"]
    if not box.network:
        args.append("--unshare-net")
    if not box.terminal:
        args.append("--new-session")
    if os.getuid() == 0:
        args += ["--cap-drop", "ALL"]
        for cap in SCRIPT_CAPABILITIES:
            args += ["--cap-add", cap]
    args += _top_level(box, shown)
    args += ["--proc", "/proc", "--dev", "/dev", "--dir", "/sys"]
    for path in _PROC_READ_ONLY:
        args += ["--ro-bind-try", path, path]
    for path in ("/run", "/tmp", *box.tmpfs):
        args += ["--tmpfs", _mount_point(box, path)]
    for relpath, dest in box.tree_binds:
        fsroot.require_real_dir(box.root, relpath)
        args += ["--bind", str(shown / relpath), _mount_point(box, dest)]
    for src, dest in box.binds:
        args += ["--bind", src, _mount_point(box, dest)]
    for src, dest in box.ro_binds:
        args += ["--ro-bind", src, _mount_point(box, dest)]
    for target, path in box.symlinks:
        args += ["--symlink", target, path]
    args += ["--remount-ro", "/", "--clearenv"]
    env = {"PATH": DEFAULT_PATH, "LANG": "C", **box.env}
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", box.cwd, "--", *argv]
    return args


def _top_level(box: Sandbox, shown: Path) -> list[str]:
    """Bind the tree's top-level directories and recreate its top-level symlinks (files are left out)."""
    mounted_elsewhere = {_top_name(dest) for _src, dest in [*box.tree_binds, *box.binds, *box.ro_binds]
                         if dest.strip("/").count("/") == 0}
    bind = "--bind" if box.root_writable else "--ro-bind"
    args: list[str] = []
    with os.scandir(box.root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in _OWN_TOP_LEVEL or entry.name in mounted_elsewhere:
                continue
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry.path), f"/{entry.name}"]
            elif entry.is_dir(follow_symlinks=False):
                args += [bind, str(shown / entry.name), f"/{entry.name}"]
    return args


def _mount_point(box: Sandbox, dest: str) -> str:
    """A mount point below the top level must be a real directory of the tree: bwrap would create a missing
    one, and resolve a symlinked one, on the host's side of the tree."""
    if dest.strip("/").count("/") > 0:
        fsroot.require_real_dir(box.root, dest.strip("/"))
    return dest


def _top_name(dest: str) -> str:
    return dest.strip("/").split("/", 1)[0]


def run(box: Sandbox, argv: Sequence[str], *, on_line: LineSink | None = None, stdin: bytes | None = None,
        timeout: float | None = None) -> Outcome:
    """Run argv in the sandbox. Output is passed line by line to on_line (or, with a terminal and no
    on_line, left on the caller's terminal). After timeout seconds the whole sandbox is killed."""
    with _overlay_for(box) as layer:
        cmd = command_line(box, argv, layer.merged if layer is not None else None)
        fds: list[int] = []
        try:
            if box.files:
                cmd, fds = _with_files(cmd, box.files)
            outcome = _spawn(cmd, box, fds, layer, on_line, stdin, timeout)
        finally:
            for fd in fds:
                os.close(fd)
        if layer is not None and not outcome.timed_out:
            overlay.fold(layer)
    return outcome


@contextlib.contextmanager
def _overlay_for(box: Sandbox) -> Iterator[overlay.Layer | None]:
    if not box.overlay:
        yield None
        return
    # next to the tree: the upper dir must be on its filesystem, so that folding it back is a rename
    with tempfile.TemporaryDirectory(prefix="strata-overlay-", dir=box.root.parent) as scratch:
        yield overlay.new_layer(box.root, Path(scratch))


def _spawn(cmd: list[str], box: Sandbox, fds: list[int], layer: overlay.Layer | None, on_line: LineSink | None,
           stdin: bytes | None, timeout: float | None) -> Outcome:
    capture = on_line is not None or not box.terminal
    with _stdin_for(stdin, box.terminal) as stdin_file:
        try:
            proc = subprocess.Popen(cmd, stdin=stdin_file, stdout=subprocess.PIPE if capture else None,
                                    stderr=subprocess.STDOUT if capture else None, pass_fds=fds,
                                    start_new_session=not box.terminal,
                                    preexec_fn=overlay.enter(layer) if layer is not None else None)
        except subprocess.SubprocessError as exc:
            raise StrataError("cannot prepare the sandbox: mounting the overlay of the tree failed") from exc
        deadline = time.monotonic() + timeout if timeout is not None else None
        if capture:
            assert proc.stdout is not None
            last, timed_out = _pump(proc.stdout, on_line or (lambda _line: None), deadline)
        else:
            last, timed_out = "", not _wait(proc, deadline)
        if timed_out:
            _kill(proc, group=not box.terminal)
        return Outcome(proc.wait(), last, timed_out)


@contextlib.contextmanager
def _stdin_for(data: bytes | None, terminal: bool) -> Iterator[IO[bytes] | int | None]:
    """stdin for the sandbox: the given bytes (from an unlinked temporary file), /dev/null, or inherited."""
    if data is None:
        yield None if terminal else subprocess.DEVNULL
        return
    with tempfile.TemporaryFile() as file:
        file.write(data)
        file.seek(0)
        yield file


def _pump(out: IO[bytes], on_line: LineSink, deadline: float | None
          ) -> tuple[str, bool]:
    """Pass output lines on until EOF; returns (last non-empty line, whether the deadline passed)."""
    last = ""
    pending = b""
    fd = out.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return last, True
            if not sel.select(wait):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > _MAX_LINE:
                lines, pending = [*lines, pending], b""
            for raw in lines:
                last = _emit(raw, on_line) or last
    if pending:
        last = _emit(pending, on_line) or last
    return last, False


def _emit(raw: bytes, on_line: LineSink) -> str:
    line = raw.decode("utf-8", "replace").rstrip("\r")
    on_line(line)
    return line if line.strip() else ""


def _wait(proc: subprocess.Popen[bytes], deadline: float | None) -> bool:
    try:
        proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill(proc: subprocess.Popen[bytes], *, group: bool) -> None:
    """bwrap dies; --die-with-parent takes its pid namespace, hence every process of the sandbox, with it."""
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()


def _with_files(cmd: list[str], files: list[tuple[str, bytes]]) -> tuple[list[str], list[int]]:
    """Insert `--file FD PATH` options (before `--chdir`) fed from pipes holding the content."""
    extra: list[str] = []
    fds: list[int] = []
    for path, content in files:
        if len(content) > 60000:
            for fd in fds:
                os.close(fd)
            raise StrataError(f"sandbox file {path} is too large to pass through a pipe")
        read_fd, write_fd = os.pipe()
        os.write(write_fd, content)
        os.close(write_fd)
        fds.append(read_fd)
        extra += ["--file", str(read_fd), path]
    split = cmd.index("--remount-ro")
    return cmd[:split] + extra + cmd[split:], fds
