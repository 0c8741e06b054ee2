"""Static deltas (spec §17): one file of every object a commit adds over another (or over nothing), so a
client fetches a handful of files instead of thousands. Written in ostree's format: a superblock
`(a{sv}tayay(commit)aya(uayttay)a(yaytt))` and parts `y` + `(a(uuu)aa(ayay)ayay)` whose operations are
open-splice-and-close ('S') over a payload blob."""

from __future__ import annotations

import base64
import hashlib
import lzma
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from strata.errors import CorruptionError, NotFoundError, StrataError
from strata.image import gvariant, varint
from strata.image import objects as O
from strata.image.fsutil import atomic_write
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.traverse import commit_objects

SUPERBLOCK_TYPE = "(a{sv}tayay" + O.COMMIT_TYPE + "aya(uayttay)a(yaytt))"
PART_TYPE = "(a(uuu)aa(ayay)ayay)"
_OP_SPLICE = ord("S")
_PART_LIMIT = 16 << 20
_TABLES_ALLOWANCE = 10 << 20


class UnsupportedDeltaError(StrataError):
    """The delta uses features strata does not execute; the caller fetches objects instead."""


def to_mbase64(checksum: str) -> str:
    """ostree's modified base64 of a checksum: '/' becomes '_', no padding."""
    return base64.b64encode(bytes.fromhex(checksum)).decode().rstrip("=").replace("/", "_")


def from_mbase64(text: str) -> str:
    padded = text.replace("_", "/") + "=" * (-len(text) % 4)
    return base64.b64decode(padded).hex()


def delta_dir(repo_path: Path, source: str | None, target: str) -> Path:
    if source:
        name = to_mbase64(source)
        return repo_path / "deltas" / name[:2] / f"{name[2:]}-{to_mbase64(target)}"
    name = to_mbase64(target)
    return repo_path / "deltas" / name[:2] / name[2:]


def delta_relpath(source: str | None, target: str) -> str:
    return str(delta_dir(Path(""), source, target))


def list_deltas(repo: Repo) -> list[tuple[str, bytes]]:
    """(FROM-TO or TO, sha256 of the superblock) for every delta in deltas/."""
    top = repo.path / "deltas"
    if not top.is_dir():
        return []
    found = []
    for prefix in sorted(top.iterdir()):
        for rest in sorted(prefix.iterdir()):
            superblock = rest / "superblock"
            if not superblock.is_file():
                continue
            name = prefix.name + rest.name
            if "-" in name:
                source, _, target = name.partition("-")
                label = f"{from_mbase64(source)}-{from_mbase64(target)}"
            else:
                label = from_mbase64(name)
            found.append((label, hashlib.sha256(superblock.read_bytes()).digest()))
    return found


def _native64(value: int) -> int:
    """Part sizes are stored in the writer's byte order (little-endian here); our codec writes BE."""
    return int.from_bytes(value.to_bytes(8, "little"), "big")


@dataclass
class _Part:
    modes: list[tuple[int, int, int]] = field(default_factory=list)
    xattrs: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    payload: bytearray = field(default_factory=bytearray)
    ops: bytearray = field(default_factory=bytearray)
    objects: bytearray = field(default_factory=bytearray)
    unpacked: int = 0

    def index(self, table: list[object], value: object) -> int:
        if value not in table:
            table.append(value)
        return table.index(value)

    def add_metadata(self, objtype: ObjectType, checksum: str, data: bytes) -> None:
        self.ops += bytes([_OP_SPLICE]) + varint.encode(len(data)) + varint.encode(len(self.payload))
        self.payload += data
        self._record(objtype, checksum, len(data))

    def add_content(self, checksum: str, meta: O.FileMeta, content: bytes) -> None:
        data = meta.symlink_target.encode() if meta.is_symlink else content
        mode_index = self.index(self.modes, (meta.uid, meta.gid, meta.mode))  # type: ignore[arg-type]
        xattr_index = self.index(self.xattrs, [(n + b"\0", v) for n, v in meta.xattrs])  # type: ignore[arg-type]
        self.ops += bytes([_OP_SPLICE]) + b"".join(
            varint.encode(n) for n in (mode_index, xattr_index, len(data), len(self.payload)))
        self.payload += data
        self._record(ObjectType.FILE, checksum, len(data))

    def _record(self, objtype: ObjectType, checksum: str, size: int) -> None:
        self.objects += bytes([objtype.number]) + bytes.fromhex(checksum)
        self.unpacked += size

    def serialize(self, compress: bool) -> tuple[bytes, int]:
        body = gvariant.encode(PART_TYPE, (self.modes, self.xattrs, bytes(self.payload), bytes(self.ops)))
        if compress:
            return b"x" + lzma.compress(body, format=lzma.FORMAT_XZ), len(body)
        return b"\0" + body, len(body)


def generate(repo: Repo, source: str | None, target: str, *, compress: bool = True) -> Path:
    """Write the delta from source (None: from nothing) to target into deltas/; returns its directory."""
    if not repo.has_object(target, ObjectType.COMMIT):
        raise NotFoundError(f"commit {target} not found")
    have: set[tuple[str, ObjectType]] = set()
    if source is not None:
        if not repo.has_object(source, ObjectType.COMMIT):
            raise NotFoundError(f"commit {source} not found")
        have = set(commit_objects(repo, source))
    wanted = [item for item in dict.fromkeys(commit_objects(repo, target)) if item not in have
              and item[1] is not ObjectType.COMMIT]
    parts = [_Part()]
    for checksum, objtype in wanted:
        if len(parts[-1].payload) > _PART_LIMIT:
            parts.append(_Part())
        if objtype is ObjectType.FILE:
            meta, content = repo.read_file(checksum, verify=True)
            parts[-1].add_content(checksum, meta, content)
        else:
            parts[-1].add_metadata(objtype, checksum, repo.read_metadata(checksum, objtype, verify=True))
    final = delta_dir(repo.path, source, target)
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    headers = []
    for number, part in enumerate(parts):
        data, unpacked = part.serialize(compress)
        (staging / str(number)).write_bytes(data)
        headers.append((0, hashlib.sha256(data).digest(), _native64(len(data)), _native64(unpacked),
                        bytes(part.objects)))
    commit = gvariant.decode(O.COMMIT_TYPE, repo.read_metadata(target, ObjectType.COMMIT))
    timestamp = repo.load_commit(target).timestamp
    superblock = gvariant.encode(SUPERBLOCK_TYPE, (
        [], timestamp, bytes.fromhex(source) if source else b"", bytes.fromhex(target), commit, b"", headers, []))
    atomic_write(staging / "superblock", superblock)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


@dataclass(frozen=True)
class DeltaPart:
    checksum: bytes  # sha256 of the part file
    size: int  # bytes of the part file
    unpacked_size: int  # bytes of its body once decompressed
    objects: list[tuple[ObjectType, str]]


@dataclass(frozen=True)
class Superblock:
    source: str | None
    target: str
    commit: bytes
    parts: list[DeltaPart]


def parse_superblock(data: bytes) -> Superblock:
    """A superblock from a server: every field checked, so a hostile one fails as CorruptionError."""
    _meta, _ts, source, target, commit, _prereq, parts, fallbacks = gvariant.decode(SUPERBLOCK_TYPE, data,
                                                                                   strict=False)
    if fallbacks:
        raise UnsupportedDeltaError("static deltas with fallback objects are not supported")
    if (source and len(source) != 32) or len(target) != 32:
        raise CorruptionError("static delta superblock: invalid source or target checksum")
    return Superblock(source.hex() if source else None, target.hex(), gvariant.encode(O.COMMIT_TYPE, commit),
                      [_parse_part_header(*part) for part in parts])


def _parse_part_header(_version: int, checksum: bytes, size: int, unpacked: int, objects: bytes) -> DeltaPart:
    if len(checksum) != 32 or len(objects) % 33:
        raise CorruptionError("static delta superblock: invalid part header")
    names = []
    for i in range(0, len(objects), 33):
        objtype = _TYPE_BY_NUMBER.get(objects[i])
        if objtype is None:
            raise CorruptionError(f"static delta superblock: unknown object type {objects[i]}")
        names.append((objtype, objects[i + 1:i + 33].hex()))
    return DeltaPart(checksum, _native64(size), _native64(unpacked), names)


def apply_part(repo: Repo, data: bytes, part: DeltaPart) -> int:
    """Execute one part: every object it makes is checked against its name as it is written."""
    modes, xattrs, payload, ops = gvariant.decode(PART_TYPE, _part_body(data, part.unpacked_size), strict=False)
    pos = 0
    try:
        for objtype, checksum in part.objects:
            if pos >= len(ops) or ops[pos] != _OP_SPLICE:
                raise UnsupportedDeltaError("static delta uses operations strata does not execute")
            pos += 1
            if objtype is ObjectType.FILE:
                pos = _splice_content(repo, checksum, ops, pos, (modes, xattrs, payload))
            else:
                size, pos = varint.decode(ops, pos, "static delta")
                offset, pos = varint.decode(ops, pos, "static delta")
                repo.write_metadata(objtype, _slice(payload, offset, size), expected=checksum)
    except (IndexError, ValueError) as exc:
        raise CorruptionError(f"malformed static delta part: {exc}") from None
    return len(part.objects)


def _splice_content(repo: Repo, checksum: str, ops: bytes, pos: int,
                    tables: tuple[list[tuple[int, int, int]], list[list[tuple[bytes, bytes]]], bytes]) -> int:
    modes, xattrs, payload = tables
    mode_index, pos = varint.decode(ops, pos, "static delta")
    xattr_index, pos = varint.decode(ops, pos, "static delta")
    size, pos = varint.decode(ops, pos, "static delta")
    offset, pos = varint.decode(ops, pos, "static delta")
    uid, gid, mode = modes[mode_index]
    chunk = _slice(payload, offset, size)
    attrs = tuple((n[:-1], v) for n, v in xattrs[xattr_index])
    if (mode & 0o170000) == 0o120000:
        meta = O.FileMeta(uid, gid, mode, chunk.decode("utf-8", "surrogateescape"), attrs)
        repo.write_content(meta, b"", expected=checksum)
    else:
        repo.write_content(O.FileMeta(uid, gid, mode, "", attrs), chunk, expected=checksum)
    return pos


def _slice(payload: bytes, offset: int, size: int) -> bytes:
    if offset + size > len(payload):
        raise CorruptionError("static delta operation reads past its payload")
    return payload[offset:offset + size]


def _part_body(data: bytes, unpacked_size: int) -> bytes:
    """The part's GVariant body; an xz body is inflated no further than the superblock declared. (ostree
    declares the payload's size; the mode, xattr and operation tables come on top, hence the allowance.)"""
    if data[:1] == b"\0":
        return data[1:]
    if data[:1] != b"x":
        raise CorruptionError("unknown static delta part compression")
    decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        limit = unpacked_size + _TABLES_ALLOWANCE
        body = decomp.decompress(data[1:], max_length=limit + 1)
    except lzma.LZMAError as exc:
        raise CorruptionError(f"corrupt static delta part: {exc}") from None
    if len(body) > limit or not decomp.eof:
        raise CorruptionError("static delta part does not inflate to its declared size")
    return body


_TYPE_BY_NUMBER = {t.number: t for t in ObjectType}
