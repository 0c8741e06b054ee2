"""The `ostree.sizes` commit metadata: per object its archived and unpacked size (`commit --generate-sizes`)."""

from __future__ import annotations

from dataclasses import dataclass

from strata.errors import CorruptionError
from strata.image import inspect, varint
from strata.image.objects import ObjectType
from strata.image.repo import Repo


@dataclass(frozen=True)
class SizeEntry:
    checksum: str
    archived: int
    unpacked: int
    objtype: ObjectType


def _tree_objects(repo: Repo, root: tuple[str, str]) -> list[tuple[str, ObjectType]]:
    found: dict[str, ObjectType] = {root[1]: ObjectType.DIRMETA}
    stack = [root]
    while stack:
        tree_csum, meta_csum = stack.pop()
        found[tree_csum] = ObjectType.DIRTREE
        found[meta_csum] = ObjectType.DIRMETA
        tree = repo.load_dirtree(tree_csum)
        for checksum in tree.files.values():
            found[checksum] = ObjectType.FILE
        stack.extend(tree.dirs.values())
    return sorted(found.items())


def _sizes_of(repo: Repo, checksum: str, objtype: ObjectType) -> tuple[int, int]:
    if objtype is not ObjectType.FILE:
        size = len(repo.read_metadata(checksum, objtype))
        return size, size
    unpacked = inspect.content_size(repo, checksum)
    archived = repo.object_path(checksum, objtype).stat().st_size if repo.is_archive else unpacked
    return archived, unpacked


def sizes_entries(repo: Repo, root: tuple[str, str]) -> list[bytes]:
    """The `aay` value of ostree.sizes for every object of a tree, sorted by checksum."""
    entries = []
    for checksum, objtype in _tree_objects(repo, root):
        archived, unpacked = _sizes_of(repo, checksum, objtype)
        entries.append(bytes.fromhex(checksum) + varint.encode(archived) + varint.encode(unpacked)
                       + bytes([objtype.number]))
    return entries


def parse_sizes(value: object) -> list[SizeEntry]:
    if value is None:
        raise CorruptionError("No metadata key ostree.sizes in commit")
    entries = []
    for raw in value if isinstance(value, list) else []:
        data = bytes(raw)
        if len(data) < 32:
            raise CorruptionError("Could not read ostree.sizes metadata entry")
        archived, pos = varint.decode(data, 32, "ostree.sizes")
        unpacked, pos = varint.decode(data, pos, "ostree.sizes")
        objtype = ObjectType.FILE
        if pos < len(data):
            objtype = next((t for t in ObjectType if t.number == data[pos]), ObjectType.FILE)
        entries.append(SizeEntry(data[:32].hex(), archived, unpacked, objtype))
    return entries
