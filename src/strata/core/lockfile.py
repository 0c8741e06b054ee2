"""rpm-ostree's lockfiles (`compose tree --ex-lockfile FILE`): JSON or YAML mapping package names to the
exact build a compose may install. Later files override earlier ones. `--ex-write-lockfile-to` writes one."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from strata.errors import InvalidInputError
from strata.image.fsutil import atomic_write
from strata.packages.solver import Candidate, LockedPackage

MAX_LOCKFILE_SIZE = 16 << 20
_ENTRY_KEYS = {"evr", "evra", "digest", "metadata"}


def load_lockfiles(paths: list[Path]) -> list[LockedPackage]:
    locked: dict[str, LockedPackage] = {}
    for path in paths:
        for lock in _load_one(path):
            locked[lock.name] = lock
    return list(locked.values())


def _load_one(path: Path) -> list[LockedPackage]:
    data = _parse(path)
    unknown = sorted(set(data) - {"packages", "metadata"})
    if unknown:
        raise InvalidInputError(f"Parsing {path}: unknown fields: {', '.join(unknown)}")
    packages = data.get("packages")
    if not isinstance(packages, dict):
        raise InvalidInputError(f"Key 'packages' not found in {path}")
    return [_entry(path, str(name), value) for name, value in packages.items()]


def _parse(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_LOCKFILE_SIZE:
            raise InvalidInputError(f"lockfile {path} is larger than {MAX_LOCKFILE_SIZE:,} bytes")
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise InvalidInputError(f"lockfile not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError, RecursionError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"Parsing {path}: {first[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"Parsing {path}: a lockfile is a map")
    return data


def _entry(path: Path, name: str, value: Any) -> LockedPackage:
    if not isinstance(value, dict) or set(value) - _ENTRY_KEYS or ("evr" in value) == ("evra" in value):
        raise InvalidInputError(f"Parsing {path}: package {name}: expected 'evr' or 'evra' (and 'digest')")
    digest = value.get("digest") or ""
    if not isinstance(digest, str):
        raise InvalidInputError(f"Parsing {path}: package {name}: 'digest' must be a string")
    if "evr" in value:
        return LockedPackage(name, _evr(path, name, value["evr"]), "", digest)
    evra = value["evra"]
    evr, dot, arch = str(evra).rpartition(".")
    if not isinstance(evra, str) or not dot or not evr or not arch:
        raise InvalidInputError(f"package {name} has malformed evra: {evra}")
    return LockedPackage(name, _evr(path, name, evr), arch, digest)


def _evr(path: Path, name: str, evr: Any) -> str:
    if not isinstance(evr, str) or "-" not in evr:
        raise InvalidInputError(f"Parsing {path}: package {name}: malformed evr {evr!r}")
    return evr.removeprefix("0:")


def write_lockfile(path: Path, solution: list[Candidate], repo_timestamps: dict[str, int]) -> None:
    """rpm-ostree's `--ex-write-lockfile-to`: the solved set as a lockfile (JSON), replaced atomically."""
    packages = {pkg.nevra.name: {"evra": f"{_solv_evr(pkg)}.{pkg.nevra.arch}", "digest": pkg.checksum_text}
                for pkg in sorted(solution, key=lambda p: p.nevra.name)}
    repos = {repo_id: {"generated": _rfc3339(stamp)} for repo_id, stamp in sorted(repo_timestamps.items())}
    data = {"packages": packages, "metadata": {"generated": _rfc3339(int(time.time())), "rpmmd_repos": repos}}
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), fsync=False)


def _solv_evr(pkg: Candidate) -> str:
    nevra = pkg.nevra
    return f"{nevra.epoch}:{nevra.version}-{nevra.release}" if nevra.epoch else f"{nevra.version}-{nevra.release}"


def _rfc3339(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
