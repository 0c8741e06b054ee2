"""Which static delta a pull takes to a commit (ostree's rules), and the sizes a `--dry-run` reports.

A remote advertises deltas in its summary (`ostree.static-deltas`) or, when the summary says
`ostree.summary.indexed-deltas` (or its config says `core.indexed-deltas` and no summary is fetched), in one
index file per target commit under `delta-indexes/`. Among the deltas leading to the wanted commit, one
from the newest complete local commit wins; a delta from scratch is taken only when the ref does not exist
here yet (a few commits behind, objects are cheaper than a whole tree)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.image import gvariant
from strata.image.deltas import Superblock, parse_delta_name, to_mbase64
from strata.image.objects import ObjectType

if TYPE_CHECKING:
    from strata.image.fetcher import Fetcher
    from strata.image.repo import Repo

INDEX_DELTAS_KEY = "ostree.static-deltas"


class Route(Enum):
    OBJECTS = "objects"  # fetch the commit and its tree object by object
    DELTA = "delta"  # apply the chosen delta
    NOTHING = "nothing"  # the commit is here and deltas are required: not even its detached metadata


@dataclass(frozen=True)
class DeltaChoice:
    route: Route
    name: str | None = None  # FROM-TO or TO, for Route.DELTA
    digest: bytes | None = None  # sha256 of its superblock, as advertised


@dataclass
class AdvertisedDeltas:
    """The deltas a remote offers: those its summary lists, and its per-commit indexes when it has them."""

    listed: dict[str, bytes] = field(default_factory=dict)  # name -> sha256 of the superblock
    indexed: bool = False
    fetched_indexes: int = 0  # index requests made (ostree counts each, found or not, as fetched metadata)

    @property
    def any(self) -> bool:
        return self.indexed or bool(self.listed)

    def leading_to(self, fetcher: Fetcher, target: str, limit: int) -> dict[str, bytes]:
        """Every advertised delta whose target is target (the index is fetched when the remote has one)."""
        offered = {name: digest for name, digest in self.listed.items() if parse_delta_name(name)[1] == target}
        if self.indexed:
            offered.update(self._index(fetcher, target, limit))
        return offered

    def _index(self, fetcher: Fetcher, target: str, limit: int) -> dict[str, bytes]:
        encoded = to_mbase64(target)
        data = fetcher.get(f"delta-indexes/{encoded[:2]}/{encoded[2:]}.index", optional=True, limit=limit)
        self.fetched_indexes += 1
        if not data:
            return {}
        try:
            entries = gvariant.vardict_lookup(gvariant.decode("a{sv}", data, strict=False), INDEX_DELTAS_KEY,
                                              "a{sv}", [])
        except StrataError as exc:
            raise CorruptionError(f"Invalid delta index for {target}: {exc}") from None
        found = {}
        for name, digest in entries:
            if digest.type != "ay" or len(digest.value) != 32:
                continue
            try:
                if parse_delta_name(name)[1] == target:
                    found[name] = bytes(digest.value)
            except (StrataError, ValueError):
                continue  # a malformed name from the server is skipped, as a corrupt summary entry would be
        return found


def required_error(ref: str | None, target: str) -> NotFoundError:
    return NotFoundError(f"Static deltas required, but none found for {ref or ''} to {target}")


def choose(repo: Repo, target: str, local: str | None, offered: Callable[[], dict[str, bytes]], *,
           required: bool, ref: str | None) -> DeltaChoice:
    """The way to target: local is what the pulled ref points at here now (None: a new ref or a commit);
    offered gives the deltas leading to target (asked only when the commit is not here already)."""
    if _complete(repo, target):
        return DeltaChoice(Route.NOTHING if required else Route.OBJECTS)
    deltas = offered()
    sources = [parse_delta_name(name)[0] for name in deltas]
    start = _newest_complete(repo, [s for s in sources if s is not None])
    if start is not None:
        name = f"{start}-{target}"
        return DeltaChoice(Route.DELTA, name, deltas[name])
    if None in sources and local is None:
        return DeltaChoice(Route.DELTA, target, deltas[target])
    if required and None not in sources:
        raise required_error(ref, target)
    return DeltaChoice(Route.OBJECTS)


def _complete(repo: Repo, commit: str) -> bool:
    return repo.has_object(commit, ObjectType.COMMIT) and not repo.is_partial(commit)


def _newest_complete(repo: Repo, candidates: list[str]) -> str | None:
    best: tuple[int, str] | None = None
    for candidate in candidates:
        if not _complete(repo, candidate):
            continue
        timestamp = repo.load_commit(candidate).timestamp
        if best is None or timestamp > best[0]:
            best = (timestamp, candidate)
    return None if best is None else best[1]


@dataclass
class DeltaTotals:
    """What `pull --dry-run` prints: parts (and fallback objects) already here over all, and their sizes."""

    fetched_parts: int = 0
    total_parts: int = 0
    fetched_size: int = 0
    total_size: int = 0
    total_usize: int = 0

    def add(self, repo: Repo, superblock: Superblock) -> None:
        for fallback in superblock.fallbacks:
            self.total_parts += 1
            self.total_size += fallback.size
            self.total_usize += fallback.unpacked_size
            if repo.has_object(fallback.checksum, fallback.objtype):
                self.fetched_size += fallback.size
        for part in superblock.parts:
            self.total_parts += 1
            self.total_size += part.size
            self.total_usize += part.unpacked_size
            if all(repo.has_object(checksum, objtype) for objtype, checksum in part.objects):
                self.fetched_parts += 1
                self.fetched_size += part.size
