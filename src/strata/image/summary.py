"""The summary file (spec §12): refs with their commits, sizes and versions, so clients need one request."""

from __future__ import annotations

import contextlib
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from strata.errors import CorruptionError
from strata.image import gvariant
from strata.image.collection_refs import collection_refs
from strata.image.fsutil import atomic_write
from strata.image.gvariant import Variant, machine_order
from strata.image.objects import DirMeta, DirTree, ObjectType
from strata.image.repo import Repo

SUMMARY_TYPE = "(a(s(taya{sv}))a{sv})"


@dataclass(frozen=True)
class SummaryRef:
    name: str
    checksum: str
    size: int
    timestamp: int | None
    version: str | None


def swap64(value: int) -> int:
    """The commit size is stored in the writer's (little-endian) byte order; our codec writes BE."""
    return int.from_bytes(value.to_bytes(8, "little"), "big")


METADATA_REF = "ostree-metadata"
RefEntry = tuple[str, tuple[int, bytes, list[tuple[str, Variant]]]]


def build_summary(repo: Repo, additional: list[tuple[str, Variant]] | None = None) -> bytes:
    """The summary of repo's refs; additional entries (`summary --add-metadata`) go first in its metadata.
    With a collection ID, refs of other collections (mirrored, or of remotes with a collection ID) are listed
    by collection in ostree.summary.collection-map."""
    main = repo.config.get("core", "collection-id")
    refs, others = _summary_refs(repo, main)
    extra = [
        *machine_order(additional or []),
        *([("ostree.summary.collection-id", Variant("s", main))] if main else []),
        *([("ostree.summary.collection-map", Variant("a{sa(s(taya{sv}))}", others))] if others else []),
        ("ostree.summary.indexed-deltas", Variant("b", True)),
        ("ostree.summary.last-modified", Variant("t", int(time.time()))),
        ("ostree.summary.mode", Variant("s", repo.mode.value)),
        ("ostree.summary.tombstone-commits", Variant("b", repo.config.get_bool("core", "tombstone-commits", False))),
    ]
    deltas = _delta_entries(repo)
    if deltas:
        extra.append(("ostree.static-deltas", Variant("a{sv}", deltas)))
    return gvariant.encode(SUMMARY_TYPE, (refs, extra))


def _summary_refs(repo: Repo, main: str | None) -> tuple[list[RefEntry], list[tuple[str, list[RefEntry]]]]:
    """(the refs of the repository's own collection, [(collection ID, its refs)] of the other collections)."""
    local = {name: checksum for name, checksum in repo.list_refs(remotes=False).items()
             if not name.startswith(("ostree/", "rpmostree/"))}
    if not main:
        return _ref_entries(repo, local), []
    by_collection: dict[str, dict[str, str]] = {main: local}
    for (collection, name), checksum in collection_refs(repo, heads=False).items():
        by_collection.setdefault(collection, {})[name] = checksum
    main_refs = _ref_entries(repo, by_collection.pop(main))
    return main_refs, [(collection, _ref_entries(repo, by_collection[collection]))
                       for collection in sorted(by_collection, key=str.encode)]


def _ref_entries(repo: Repo, refs: dict[str, str]) -> list[RefEntry]:
    entries: list[RefEntry] = []
    for name, checksum in sorted(refs.items(), key=lambda kv: kv[0].encode()):
        data = repo.read_metadata(checksum, ObjectType.COMMIT)
        commit = repo.load_commit(checksum)
        meta: list[tuple[str, Variant]] = [("ostree.commit.timestamp", Variant("t", commit.timestamp))]
        if commit.version is not None:
            meta.append(("ostree.commit.version", Variant("s", commit.version)))
        entries.append((name, (swap64(len(data)), bytes.fromhex(checksum), meta)))
    return entries


def commit_summary_metadata(repo: Repo, additional: list[tuple[str, Variant]] | None = None,
                            sign: Callable[[str], None] | None = None) -> str | None:
    """In a repository with a collection ID, `summary --update` also records the summary's additional metadata
    as a commit of an empty tree on the ostree-metadata ref, bound to (COLLECTION-ID, ostree-metadata), each
    update a child of the previous one (clients that find refs by collection read it). sign(commit) runs before
    the ref moves. Returns the new commit; None (and nothing written) without a collection ID."""
    collection = repo.config.get("core", "collection-id")
    if not collection:
        return None
    from strata.image.commit import CommitRequest, write_commit
    bindings = {"ostree.collection-binding": Variant("s", collection),
                "ostree.ref-binding": Variant("as", [METADATA_REF])}
    metadata = [(key, value.type, value.value) for key, value in machine_order(additional or [])
                if key not in bindings]
    metadata += [(key, value.type, value.value) for key, value in bindings.items()]
    with repo.lock():
        dirmeta = repo.write_metadata(ObjectType.DIRMETA, DirMeta(0, 0, stat.S_IFDIR | 0o755).serialize())
        dirtree = repo.write_metadata(ObjectType.DIRTREE, DirTree().serialize())
        commit = write_commit(repo, (dirtree, dirmeta),
                              CommitRequest(metadata=metadata, parent=repo.read_ref(METADATA_REF)))
        if sign is not None:
            sign(commit)
        repo.set_ref(METADATA_REF, commit)
    return commit


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
        refs.append(SummaryRef(name, checksum.hex(), swap64(size),
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
