"""The summary file (spec §12): refs with their commits, sizes and versions, so clients need one request."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from strata.errors import CorruptionError
from strata.image import gvariant
from strata.image.fsutil import atomic_write
from strata.image.gvariant import Variant
from strata.image.objects import ObjectType
from strata.image.repo import Repo

SUMMARY_TYPE = "(a(s(taya{sv}))a{sv})"


@dataclass(frozen=True)
class SummaryRef:
    name: str
    checksum: str
    size: int
    timestamp: int | None
    version: str | None


def _swap64(value: int) -> int:
    """The commit size is stored in the writer's (little-endian) byte order; our codec writes BE."""
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def build_summary(repo: Repo, additional: list[tuple[str, Variant]] | None = None) -> bytes:
    """The summary of repo's refs; additional entries (`summary --add-metadata`) go first in its metadata."""
    refs = []
    for name, checksum in sorted(repo.list_refs(remotes=False).items(), key=lambda kv: kv[0].encode()):
        if name.startswith(("ostree/", "rpmostree/")):
            continue
        data = repo.read_metadata(checksum, ObjectType.COMMIT)
        commit = repo.load_commit(checksum)
        meta: list[tuple[str, Variant]] = [("ostree.commit.timestamp", Variant("t", commit.timestamp))]
        if commit.version is not None:
            meta.append(("ostree.commit.version", Variant("s", commit.version)))
        refs.append((name, (_swap64(len(data)), bytes.fromhex(checksum), meta)))
    extra = [
        *(additional or []),
        ("ostree.summary.indexed-deltas", Variant("b", True)),
        ("ostree.summary.last-modified", Variant("t", int(time.time()))),
        ("ostree.summary.mode", Variant("s", repo.mode.value)),
        ("ostree.summary.tombstone-commits", Variant("b", repo.config.get_bool("core", "tombstone-commits", False))),
    ]
    deltas = _delta_entries(repo)
    if deltas:
        extra.append(("ostree.static-deltas", Variant("a{sv}", deltas)))
    return gvariant.encode(SUMMARY_TYPE, (refs, extra))


def _delta_entries(repo: Repo) -> list[tuple[str, Variant]]:
    from strata.image.deltas import list_deltas
    if (repo.config.get("core", "no-deltas-in-summary") or "").lower() in ("true", "1"):
        return []  # clients find them through delta-indexes/
    return [(name, Variant("ay", digest)) for name, digest in list_deltas(repo)]


def write_delta_indexes(repo: Repo) -> None:
    """delta-indexes/AB/REST.index per target commit: every delta leading to it, with its superblock digest."""
    from strata.image.deltas import list_deltas, to_mbase64
    by_target: dict[str, list[tuple[str, Variant]]] = {}
    for name, digest in list_deltas(repo):
        by_target.setdefault(name.rpartition("-")[2], []).append((name, Variant("ay", digest)))
    top = repo.path / "delta-indexes"
    for target, entries in by_target.items():
        encoded = to_mbase64(target)
        path = top / encoded[:2] / f"{encoded[2:]}.index"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, gvariant.encode("a{sv}", [("ostree.static-deltas", Variant("a{sv}", entries))]))


def update_summary(repo: Repo, additional: list[tuple[str, Variant]] | None = None) -> bytes:
    data = build_summary(repo, additional)
    write_delta_indexes(repo)
    with repo.lock():
        atomic_write(repo.path / "summary", data)
        with contextlib.suppress(FileNotFoundError):
            (repo.path / "summary.sig").unlink()
        if repo.config.get("core", "indexed-deltas") != "true":
            repo.config.set("core", "indexed-deltas", "true")
            repo.save_config()
    return data


def parse_summary(data: bytes) -> tuple[list[SummaryRef], dict[str, object]]:
    """(refs, the other entries); the values summary readers use are type-checked."""
    refs_raw, extra = gvariant.decode(SUMMARY_TYPE, data)
    refs = []
    for name, (size, checksum, meta) in refs_raw:
        if len(checksum) != 32:
            raise CorruptionError(f"summary: ref {name} has an invalid checksum")
        refs.append(SummaryRef(name, checksum.hex(), _swap64(size),
                               gvariant.vardict_lookup(meta, "ostree.commit.timestamp", "t"),
                               gvariant.vardict_lookup(meta, "ostree.commit.version", "s")))
    return refs, {k: v.value for k, v in extra}


def advertised_deltas(data: bytes) -> dict[str, bytes]:
    """The static deltas a summary lists: name -> sha256 of the superblock (entries of another type skipped)."""
    _refs, extra = gvariant.decode(SUMMARY_TYPE, data)
    entries = gvariant.vardict_lookup(extra, "ostree.static-deltas", "a{sv}", [])
    return {name: bytes(digest.value) for name, digest in entries if digest.type == "ay"}


def summary_metadata(data: bytes) -> dict[str, Variant]:
    """The summary's own metadata entries with their types (what `summary --view` prints)."""
    _refs, extra = gvariant.decode(SUMMARY_TYPE, data)
    return dict(extra)
