"""Running a command inside a tree through bubblewrap: the one place that builds bwrap command lines."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from strata.errors import StrataError

DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Sandbox:
    """What the command sees: root as /, extra mounts, environment, namespaces."""

    root: Path
    binds: list[tuple[str, str]] = field(default_factory=list)  # (host path, path inside), read-write
    ro_binds: list[tuple[str, str]] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (path inside, content) made in tmpfs dirs
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (target, path inside)
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    root_writable: bool = True
    cwd: str = "/"


def with_file(box: Sandbox, path: str, content: bytes) -> Sandbox:
    """The same sandbox with one more file (e.g. a script) placed inside it."""
    return replace(box, files=[*box.files, (path, content)])


def bwrap_path() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise StrataError("bubblewrap (bwrap) is not installed")
    return found


def command_line(box: Sandbox, argv: Sequence[str]) -> list[str]:
    args = [bwrap_path(), "--bind" if box.root_writable else "--ro-bind", str(box.root), "/",
            "--proc", "/proc", "--dev", "/dev", "--die-with-parent", "--unshare-pid", "--unshare-uts",
            "--unshare-ipc"]
    if not box.network:
        args.append("--unshare-net")
    for path in box.tmpfs:
        args += ["--tmpfs", path]
    for src, dest in box.binds:
        args += ["--bind", src, dest]
    for src, dest in box.ro_binds:
        args += ["--ro-bind", src, dest]
    for target, path in box.symlinks:
        args += ["--symlink", target, path]
    args += ["--clearenv"]
    env = {"PATH": DEFAULT_PATH, "LANG": "C", **box.env}
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", box.cwd, "--", *argv]
    return args


def run(box: Sandbox, argv: Sequence[str], *, capture: bool = True, stdin: bytes | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run argv in the sandbox; returns the completed process (stdout+stderr merged when captured)."""
    fds: list[int] = []
    cmd = command_line(box, argv)
    if box.files:
        cmd, fds = _with_files(cmd, box.files)
    try:
        return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None, check=False, timeout=timeout,
                              pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)


def _with_files(cmd: list[str], files: list[tuple[str, bytes]]) -> tuple[list[str], list[int]]:
    """Insert `--file FD PATH` options (before `--`) fed from pipes holding the content."""
    extra: list[str] = []
    fds: list[int] = []
    for path, content in files:
        read_fd, write_fd = os.pipe()
        if len(content) > 60000:
            os.close(read_fd)
            os.close(write_fd)
            raise StrataError(f"sandbox file {path} is too large to pass through a pipe")
        os.write(write_fd, content)
        os.close(write_fd)
        fds.append(read_fd)
        extra += ["--file", str(read_fd), path]
    split = cmd.index("--chdir")
    return cmd[:split] + extra + cmd[split:], fds
