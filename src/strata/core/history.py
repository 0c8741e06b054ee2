"""The transactions the engine completed, for `strata ex history` (rpm-ostree's `ex history`): when, which verb
with which arguments, and the deployment it made. One JSON object a line, appended under the sysroot lock;
a torn or foreign line is skipped on reading, and the file is cut to its newest entries when it grows."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from strata.image.fsutil import atomic_write
from strata.sysroot.sysroot import Deployment, Sysroot

HISTORY_PATH = "extensions/strata/history.jsonl"  # inside the sysroot's repository
MAX_ENTRIES = 1000
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class HistoryEntry:
    time: int
    verb: str
    args: tuple[str, ...]
    stateroot: str
    deployment: str  # CHECKSUM.SERIAL, empty when the transaction made none
    checksum: str
    version: str | None


def _path(sysroot: Sysroot) -> Path:
    return sysroot.repo.path / HISTORY_PATH


def record(sysroot: Sysroot, verb: str, args: tuple[str, ...] | list[str], dep: Deployment | None,
           stateroot: str = "") -> None:
    entry = HistoryEntry(int(time.time()), verb, tuple(args), dep.stateroot if dep else stateroot,
                         dep.name if dep else "", dep.csum if dep else "",
                         sysroot.commit_version(dep.csum) if dep else None)
    line = json.dumps(asdict(entry)) + "\n"
    path = _path(sysroot)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line.encode())
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > MAX_ENTRIES * 512:
        _trim(path)


def _trim(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    atomic_write(path, b"".join(lines[-MAX_ENTRIES:]), fsync=False)


def entries(sysroot: Sysroot) -> list[HistoryEntry]:
    """Newest first."""
    path = _path(sysroot)
    if not path.is_file() or path.is_symlink():
        return []
    found = []
    for raw in path.read_bytes().splitlines():
        if len(raw) <= MAX_LINE:
            entry = _parse(raw)
            if entry is not None:
                found.append(entry)
    return found[::-1]


def _parse(raw: bytes) -> HistoryEntry | None:
    try:
        data = json.loads(raw)
        return HistoryEntry(int(data["time"]), str(data["verb"]), tuple(str(a) for a in data["args"]),
                            str(data["stateroot"]), str(data["deployment"]), str(data["checksum"]),
                            None if data["version"] is None else str(data["version"]))
    except (ValueError, KeyError, TypeError):
        return None
