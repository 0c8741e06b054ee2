"""The rpmdb of a tree, written and read by the real rpm (sqlite backend) so that `rpm -qa` agrees.

rpm-ostree keeps the database in /usr/share/rpm; /usr/lib/sysimage/rpm and /var/lib/rpm point there.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from strata.errors import StrataError

RPMDB_DIR = "usr/share/rpm"
RPM_MACROS_FILE = "usr/lib/rpm/macros.d/macros.rpm-ostree"
_BATCH = 200  # rpm command lines stay well below ARG_MAX


@functools.cache
def _rpm_binary() -> tuple[str, tuple[str, ...]]:
    """The rpm binary and the options it needs: Debian's build refuses installs unless forced."""
    rpm = shutil.which("rpm")
    if rpm is None:
        raise StrataError("rpm is not installed; it is needed to write the rpmdb")
    helptext = subprocess.run([rpm, "--help"], capture_output=True, text=True, check=False).stdout
    return rpm, ("--force-debian",) if "--force-debian" in helptext else ()


def _rpm(root: Path, *args: str, epoch: int | None = None) -> subprocess.CompletedProcess[str]:
    rpm, extra = _rpm_binary()
    writing = args[:1] in (("-i",), ("-e",))
    argv = [rpm, "--root", str(root.resolve()), "--dbpath", "/" + RPMDB_DIR, *args[:1],
            *(extra if writing else ()), *args[1:]]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)  # rpm >= 4.17 takes install times and ids from it
    return subprocess.run(argv, text=True, capture_output=True, check=False, env=env)


def write_rpmdb(root: Path, install: Sequence[Path], erase: Sequence[str] = (), *, epoch: int | None = None) -> None:
    """Record packages as installed in root's rpmdb (creating it), and erase others by NEVRA. With epoch,
    the install times and transaction ids are derived from it instead of the clock, so that the same
    packages in the same order always give the same database bytes."""
    (root / RPMDB_DIR).mkdir(parents=True, exist_ok=True)
    _break_hardlinks(root / RPMDB_DIR)
    for start in range(0, len(erase), _BATCH):
        proc = _rpm(root, "-e", "--justdb", "--nodeps", "--noscripts", "--notriggers",
                    *erase[start:start + _BATCH], epoch=epoch)
        if proc.returncode != 0:
            raise StrataError(f"Writing rpmdb: {_first_line(proc.stderr)}")
    for start in range(0, len(install), _BATCH):
        batch = [str(p) for p in install[start:start + _BATCH]]
        proc = _rpm(root, "-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", "--nosignature",
                    "--nodigest", "--ignorearch", "--ignoreos", "--replacepkgs", "--replacefiles", *batch,
                    epoch=epoch)
        if proc.returncode != 0:
            raise StrataError(f"Writing rpmdb: {_first_line(proc.stderr)}")
    _remove_transient_files(root / RPMDB_DIR)


def write_rpmdb_from_headers(root: Path, headers: Sequence[bytes], erase: Sequence[str] = (), *,
                             epoch: int | None = None) -> None:
    """Like write_rpmdb, from package headers (lead + signature + header, as the package cache keeps
    them): rpm records a package from its header alone when asked for the database only."""
    with tempfile.TemporaryDirectory(prefix="strata-rpmdb-") as tmp:
        paths = []
        for index, header in enumerate(headers):
            path = Path(tmp) / f"{index:05d}.rpm"
            path.write_bytes(header)
            paths.append(path)
        write_rpmdb(root, paths, erase, epoch=epoch)


def installed_nevras(root: Path) -> list[str]:
    """NEVRAs recorded in root's rpmdb, as `rpm -qa` prints them, sorted."""
    if not (root / RPMDB_DIR).is_dir():
        return []
    proc = _rpm(root, "-qa", "--qf", "%{NAME}-%{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}\n")
    if proc.returncode != 0:
        raise StrataError(f"reading rpmdb: {_first_line(proc.stderr)}")
    return sorted(line.replace("-0:", "-") for line in proc.stdout.split())


def query(root: Path, queryformat: str, packages: Sequence[str] | None = None) -> str:
    """`rpm -q --qf` over the given packages (all when None) of root's rpmdb."""
    selection = ["-q", *packages] if packages else ["-qa"]
    proc = _rpm(root, *selection, "--qf", queryformat)
    if proc.returncode != 0:
        raise StrataError(f"reading rpmdb: {_first_line(proc.stderr)}")
    return proc.stdout


def _break_hardlinks(dbdir: Path) -> None:
    """rpm rewrites its database in place: a checkout's files are hardlinks into the object store."""
    for entry in dbdir.iterdir():
        st = entry.lstat()
        if entry.is_file() and not entry.is_symlink() and st.st_nlink > 1:
            copy = entry.with_name(entry.name + ".strata-copy")
            shutil.copy2(entry, copy)
            os.replace(copy, entry)


def _remove_transient_files(dbdir: Path) -> None:
    for entry in dbdir.iterdir():
        if entry.name.startswith(("__db.", ".rpm.lock", ".dbenv.lock")) or entry.name.endswith(
                ("-shm", "-wal")):
            entry.unlink()


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "rpm failed"
