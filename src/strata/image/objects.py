"""OSTree object encodings and checksums. Pure: bytes in, values out, no file access."""

from __future__ import annotations

import hashlib
import re
import stat
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from strata.errors import CorruptionError, InvalidInputError
from strata.image import gvariant
from strata.image.gvariant import Variant

DIRTREE_TYPE = "(a(say)a(sayay))"
DIRMETA_TYPE = "(uuua(ayay))"
COMMIT_TYPE = "(a{sv}aya(say)sstayay)"
FILE_HEADER_TYPE = "(uuuusa(ayay))"
ARCHIVE_HEADER_TYPE = "(tuuuusa(ayay))"
VARDICT_TYPE = "a{sv}"

Xattrs = list[tuple[bytes, bytes]]  # (name without NUL, value), sorted by name

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_LENGTH = sys.maxsize  # zlib's max_length is a C ssize_t
_CHUNK = 1 << 20
_MAX_HEADER = 10 << 20  # a file header holds owner, mode, symlink target and xattrs
# 9999-12-31 23:59:59 UTC: the last second GLib's GDateTime (ostree log/show) and Python's datetime represent.
MAX_TIMESTAMP = 253402300799
MIN_TIMESTAMP = -62135596800  # 0001-01-01: ostree stores dates before 1970 as two's complement in the uint64


class ObjectType(Enum):
    FILE = "file"
    DIRTREE = "dirtree"
    DIRMETA = "dirmeta"
    COMMIT = "commit"
    TOMBSTONE_COMMIT = "tombstone-commit"
    COMMITMETA = "commitmeta"

    @property
    def is_meta(self) -> bool:
        return self is not ObjectType.FILE

    @property
    def number(self) -> int:
        return _TYPE_NUMBERS[self]


_TYPE_NUMBERS = {ObjectType.FILE: 1, ObjectType.DIRTREE: 2, ObjectType.DIRMETA: 3, ObjectType.COMMIT: 4,
                 ObjectType.TOMBSTONE_COMMIT: 5, ObjectType.COMMITMETA: 6}


def is_checksum(text: str) -> bool:
    return bool(_HEX64.fullmatch(text))


def check_timestamp(timestamp: int) -> int:
    """A commit timestamp that dates can be shown for; ostree's wording for the others."""
    if not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
        raise InvalidInputError(f"Invalid timestamp: {timestamp}")
    return timestamp


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_name(name: str) -> None:
    """A tree entry name must be a single, non-empty path component."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidInputError(f"invalid file name in tree: {name!r}")


# ---------------------------------------------------------------- xattrs


def normalize_xattrs(xattrs: Xattrs | None) -> Xattrs:
    if not xattrs:
        return []
    return sorted(xattrs, key=lambda kv: kv[0])


def _xattrs_to_gv(xattrs: Xattrs) -> list[tuple[bytes, bytes]]:
    return [(name + b"\0", value) for name, value in xattrs]


def _xattrs_from_gv(items: list[tuple[bytes, bytes]]) -> Xattrs:
    """xattrs as stored: names NUL-terminated, non-empty, strictly ascending (as ostree validates them)."""
    result = []
    previous = b""
    for name, value in items:
        if not name.endswith(b"\0") or len(name) < 2 or b"\0" in name[:-1]:
            raise CorruptionError("malformed xattr name")
        name = name[:-1]
        if name <= previous:
            raise CorruptionError(f"{'duplicate' if name == previous else 'unsorted'} xattr name {name!r}")
        result.append((name, value))
        previous = name
    return result


# ---------------------------------------------------------------- dirmeta


@dataclass(frozen=True)
class DirMeta:
    uid: int
    gid: int
    mode: int  # full st_mode including S_IFDIR
    xattrs: tuple[tuple[bytes, bytes], ...] = ()

    def serialize(self) -> bytes:
        return gvariant.encode(DIRMETA_TYPE, (self.uid, self.gid, self.mode, _xattrs_to_gv(list(self.xattrs))))

    @classmethod
    def parse(cls, data: bytes, *, strict: bool = True) -> DirMeta:
        uid, gid, mode, xattrs = gvariant.decode(DIRMETA_TYPE, data, strict=strict)
        if not stat.S_ISDIR(mode) or mode & ~(stat.S_IFMT(mode) | 0o7777):
            raise CorruptionError(f"invalid directory mode {mode:o}")
        return cls(uid, gid, mode, tuple(_xattrs_from_gv(xattrs)))


# ---------------------------------------------------------------- dirtree


@dataclass
class DirTree:
    files: dict[str, str] = field(default_factory=dict)  # name -> content checksum
    dirs: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (dirtree, dirmeta)

    def serialize(self) -> bytes:
        files = [(name.encode("utf-8"), bytes.fromhex(self.files[name])) for name in sorted(self.files, key=_name_key)]
        dirs = [(name.encode("utf-8"), bytes.fromhex(t) + bytes.fromhex(m))
                for name, (t, m) in sorted(self.dirs.items(), key=lambda kv: _name_key(kv[0]))]
        return encode_dirtree(files, dirs)

    @classmethod
    def parse(cls, data: bytes, *, strict: bool = True) -> DirTree:
        """strict also checks normal form: always for data from elsewhere (pull, fsck)."""
        fast = decode_dirtree_fast(data, strict=strict)
        if fast is not None:
            files_raw, dirs_raw = fast
        else:
            files_raw, dirs_raw = gvariant.decode(DIRTREE_TYPE, data, strict=strict)
        tree = cls()
        previous = ""  # sorts before every valid name
        for name, csum in files_raw:
            _check_entry_order(previous, name)
            _check_raw_checksum(csum)
            tree.files[name] = csum.hex()
            previous = name
        previous = ""
        for name, tcsum, mcsum in dirs_raw:
            _check_entry_order(previous, name)
            _check_raw_checksum(tcsum)
            _check_raw_checksum(mcsum)
            if name in tree.files:
                raise CorruptionError(f"name {name!r} is both a file and a directory")
            tree.dirs[name] = (tcsum.hex(), mcsum.hex())
            previous = name
        return tree


_OFFSET_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _gv_offsets(body_len: int, ends: list[int]) -> bytes:
    width = gvariant.offset_width(body_len, len(ends))
    return struct.pack(f"<{len(ends)}{_OFFSET_FORMATS[width]}", *ends)


def _gv_entry_array(entries: list[tuple[bytes, bytes]], checksums: int) -> bytes:
    """An array of (s ay...) entries whose ay members are checksums of 32 bytes each, in normal form."""
    if not entries:
        return b""
    parts: list[bytes] = []
    ends: list[int] = []
    total = 0
    small = 254 - 33 * checksums  # longest name whose framing offsets fit in one byte each
    for name, raw in entries:
        n = len(name)
        if n <= small:  # the end of every variable member but the last, last one first
            tail = bytes([n + 33, n + 1]) if checksums == 2 else bytes([n + 1])
        else:
            tail = _gv_offsets(n + 1 + 32 * checksums, [n + 1 + 32 * i for i in range(checksums - 1, -1, -1)])
        element = b"".join((name, b"\0", raw, tail))
        parts.append(element)
        total += len(element)
        ends.append(total)
    parts.append(_gv_offsets(total, ends))
    return b"".join(parts)


def encode_dirtree(files: list[tuple[bytes, bytes]], dirs: list[tuple[bytes, bytes]]) -> bytes:
    """(a(say)a(sayay)) in normal form from sorted (name, raw checksum) and (name, raw tree + raw meta)
    entries: what gvariant.encode(DIRTREE_TYPE, ...) gives, without the generic codec (commit, checkout and
    fsck handle one per directory)."""
    for name, _raw in files + dirs:
        if b"\0" in name:
            raise ValueError("string contains NUL")
    first = _gv_entry_array(files, 1)
    body = first + _gv_entry_array(dirs, 2)
    return body + _gv_offsets(len(body), [len(first)])


def _gv_width(size: int) -> int:
    return 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8


def _gv_fast_entries(data: bytes, start: int, stop: int, raw_len: int) -> list[tuple[Any, ...]]:
    """The (s ay...) entries of an array between start and stop; ValueError unless every element has exactly
    the shape of normal form (a name, its NUL, raw_len bytes, its framing offsets)."""
    if start == stop:
        return []
    width = _gv_width(stop - start)
    table = start + int.from_bytes(data[stop - width:stop], "little")
    if not start <= table <= stop or (stop - table) % width:
        raise ValueError("bad array framing")
    entries: list[tuple[Any, ...]] = []
    pos = start
    offsets = raw_len // 32
    for off in range(table, stop, width):
        end = start + int.from_bytes(data[off:off + width], "little")
        nul = data.index(0, pos, end)
        if nul + 1 + raw_len + offsets * _gv_width(end - pos) != end:
            raise ValueError("element not in normal form")
        raw = data[nul + 1:nul + 1 + raw_len]
        name = data[pos:nul].decode("utf-8")
        entries.append((name, raw) if raw_len == 32 else (name, raw[:32], raw[32:]))
        pos = end
    return entries


def decode_dirtree_fast(data: bytes, *, strict: bool = True
                        ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
    """A dirtree whose every element has the shape of normal form, decoded without the generic codec; None for
    anything else (the caller then uses the generic decoder, which explains what is wrong). With strict,
    normal form is proven by re-encoding: it is unique, so bytes that re-encode to themselves were decoded
    exactly as the generic decoder decodes them."""
    try:
        size = len(data)
        width = _gv_width(size)
        split = int.from_bytes(data[size - width:], "little")
        if not 0 <= split <= size - width:
            return None
        files = _gv_fast_entries(data, 0, split, 32)
        dirs = _gv_fast_entries(data, split, size - width, 64)
        if not strict:
            return files, dirs
        again = encode_dirtree([(n.encode("utf-8"), r) for n, r in files],
                               [(n.encode("utf-8"), t + m) for n, t, m in dirs])
    except (ValueError, IndexError, UnicodeError):
        return None
    return (files, dirs) if again == data else None


def _check_entry_order(previous: str, name: str) -> None:
    """Entries are strictly ascending by UTF-8 bytes, which for decoded text is code point order: one
    comparison per entry refuses both unsorted lists and duplicate names."""
    validate_name(name)
    if name <= previous:
        problem = "duplicate name" if name == previous else f"unsorted entries ({previous!r} before)"
        raise CorruptionError(f"invalid dirtree: {problem} {name!r}")


def _name_key(name: str) -> bytes:
    return name.encode("utf-8")


def _check_raw_checksum(raw: bytes) -> None:
    if len(raw) != 32:
        raise CorruptionError("checksum field is not 32 bytes")


# ---------------------------------------------------------------- commit


@dataclass
class Commit:
    metadata: list[tuple[str, Variant]]
    parent: str | None
    subject: str
    body: str
    timestamp: int
    root_tree: str
    root_meta: str
    related: list[tuple[str, bytes]] = field(default_factory=list)

    def serialize(self) -> bytes:
        parent = bytes.fromhex(self.parent) if self.parent else b""
        return gvariant.encode(COMMIT_TYPE, (
            self.metadata, parent, self.related, self.subject, self.body,
            check_timestamp(self.timestamp) & 0xFFFF_FFFF_FFFF_FFFF,
            bytes.fromhex(self.root_tree), bytes.fromhex(self.root_meta)))

    @classmethod
    def parse(cls, data: bytes, *, strict: bool = True) -> Commit:
        meta, parent, related, subject, body, ts, tree, dmeta = gvariant.decode(COMMIT_TYPE, data, strict=strict)
        if parent and len(parent) != 32:
            raise CorruptionError("commit parent is not 32 bytes")
        _check_raw_checksum(tree)
        _check_raw_checksum(dmeta)
        if any(not key for key, _ in meta):
            raise CorruptionError("commit metadata has an empty key")
        signed_ts = ts - (1 << 64) if ts >= 1 << 63 else ts
        return cls(meta, parent.hex() if parent else None, subject, body, signed_ts, tree.hex(), dmeta.hex(),
                   related)

    def meta(self, key: str, default: Any = None) -> Any:
        return gvariant.vardict_get(self.metadata, key, default)

    def typed_meta(self, key: str, sig: str, default: Any = None) -> Any:
        """meta(key) if its GVariant type is sig, else default: for metadata from untrusted commits."""
        return gvariant.vardict_lookup(self.metadata, key, sig, default)

    @property
    def version(self) -> str | None:
        value = self.meta("version")
        return value if isinstance(value, str) else None

    @property
    def content_checksum(self) -> str:
        return sha256_hex(bytes.fromhex(self.root_tree) + bytes.fromhex(self.root_meta))


# ---------------------------------------------------------------- content objects


@dataclass(frozen=True)
class FileMeta:
    """What a content object records besides the data: owner, mode, symlink target, xattrs."""

    uid: int
    gid: int
    mode: int  # full st_mode with S_IFREG or S_IFLNK
    symlink_target: str = ""
    xattrs: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def validate(self) -> None:
        if not (stat.S_ISREG(self.mode) or stat.S_ISLNK(self.mode)):
            raise CorruptionError(f"content object has invalid mode {self.mode:o}")
        if self.mode & ~(stat.S_IFMT(self.mode) | 0o7777):
            raise CorruptionError(f"content object has invalid mode bits {self.mode:o}")


def _frame(variant_bytes: bytes) -> bytes:
    return len(variant_bytes).to_bytes(4, "big") + b"\0\0\0\0" + variant_bytes


def _plain_variant(fixed: bytes, target: str) -> bytes:
    """(...s a(ayay)) with an empty xattr list: the fixed fields, the string, one framing offset.
    The common case of every commit and checkout, encoded without the generic codec."""
    body = fixed + target.encode("utf-8") + b"\0"
    width = gvariant.offset_width(len(body), 1)
    return body + len(body).to_bytes(width, "little")


def file_header(meta: FileMeta) -> bytes:
    """The header hashed before a file's content (§7.2)."""
    if not meta.xattrs:
        return _frame(_plain_variant(struct.pack(">IIII", meta.uid, meta.gid, meta.mode, 0), meta.symlink_target))
    return _frame(gvariant.encode(FILE_HEADER_TYPE, (
        meta.uid, meta.gid, meta.mode, 0, meta.symlink_target, _xattrs_to_gv(list(meta.xattrs)))))


def archive_header(meta: FileMeta, size: int) -> bytes:
    """The header at the start of a .filez object (§8.1)."""
    if not meta.xattrs:
        return _frame(_plain_variant(struct.pack(">QIIII", size, meta.uid, meta.gid, meta.mode, 0),
                                     meta.symlink_target))
    return _frame(gvariant.encode(ARCHIVE_HEADER_TYPE, (
        size, meta.uid, meta.gid, meta.mode, 0, meta.symlink_target, _xattrs_to_gv(list(meta.xattrs)))))


def parse_archive_header(data: bytes) -> tuple[FileMeta, int, int]:
    """Parse the start of a .filez object: (meta, content size, offset where deflate data starts)."""
    if len(data) < 8:
        raise CorruptionError("truncated archive file header")
    length = int.from_bytes(data[:4], "big")
    end = 8 + length
    if len(data) < end:
        raise CorruptionError("truncated archive file header")
    # Not normal-form checked: the content checksum is taken over the re-encoded header, so a header in any
    # other form cannot match its object name anyway.
    plain = _plain_archive_header(data[8:end])
    if plain is not None:
        size, meta = plain
    else:
        size, uid, gid, mode, _rdev, target, xattrs = gvariant.decode(ARCHIVE_HEADER_TYPE, data[8:end],
                                                                      strict=False)
        meta = FileMeta(uid, gid, mode, target, tuple(_xattrs_from_gv(xattrs)))
    meta.validate()
    return meta, size, end


def _plain_archive_header(variant: bytes) -> tuple[int, FileMeta] | None:
    """(size, meta) of an archive header without xattrs, read without the generic codec; None otherwise."""
    if len(variant) < 26:
        return None
    size, uid, gid, mode, _rdev = struct.unpack_from(">QIIII", variant)
    nul = variant.find(b"\0", 24)
    if nul < 0:
        return None
    try:
        target = variant[24:nul].decode("utf-8")
    except UnicodeError:
        return None
    if _plain_variant(variant[:24], target) != variant:
        return None
    return size, FileMeta(uid, gid, mode, target)


def read_archive_header(read: Callable[[int], bytes]) -> tuple[FileMeta, int]:
    """(meta, content size) from the start of a .filez being read; read is left at the deflate stream."""
    head = read(8)
    if len(head) < 8:
        raise CorruptionError("truncated archive file header")
    length = int.from_bytes(head[:4], "big")
    if length > _MAX_HEADER:
        raise CorruptionError(f"archive file header of {length} bytes (at most {_MAX_HEADER})")
    meta, size, _offset = parse_archive_header(head + read(length))
    return meta, size


def encode_ostreemeta(meta: FileMeta) -> bytes:
    """The user.ostreemeta xattr value of a bare-user object (§8.3)."""
    if not meta.xattrs:
        return struct.pack(">III", meta.uid, meta.gid, meta.mode)
    return gvariant.encode(DIRMETA_TYPE, (meta.uid, meta.gid, meta.mode, _xattrs_to_gv(list(meta.xattrs))))


def ostreemeta_mode(value: bytes) -> int:
    """Just the st_mode of a user.ostreemeta value (its third BE32), without decoding the rest."""
    if len(value) < 12:
        raise CorruptionError("truncated user.ostreemeta")
    return int.from_bytes(value[8:12], "big")


def decode_ostreemeta(value: bytes) -> tuple[int, int, int, Xattrs]:
    if len(value) == 12:  # no xattrs: three BE32 and an empty array, what almost every object has
        uid, gid, mode = struct.unpack(">III", value)
        return uid, gid, mode, []
    uid, gid, mode, xattrs = gvariant.decode(DIRMETA_TYPE, value)
    return uid, gid, mode, _xattrs_from_gv(xattrs)


def content_checksum(meta: FileMeta, content: bytes = b"") -> str:
    digest = hashlib.sha256(file_header(meta))
    if not meta.is_symlink:
        digest.update(content)
    return digest.hexdigest()


def new_archive_compressor(level: int = 6) -> Any:
    return zlib.compressobj(level, zlib.DEFLATED, -15)


def archive_compress(content: bytes, level: int = 6) -> bytes:
    comp = new_archive_compressor(level)
    return bytes(comp.compress(content) + comp.flush())


def archive_decompress(data: bytes, expected_size: int) -> bytes:
    """Inflate the content of a .filez; never more than the header declares, so a bomb stops early."""
    decomp = zlib.decompressobj(-15)
    try:
        out = decomp.decompress(data, min(expected_size + 1, _MAX_LENGTH))
    except zlib.error as exc:
        raise CorruptionError(f"corrupt compressed content: {exc}") from None
    check_inflated(decomp, len(out), expected_size)
    return out


def hash_inflated(read: Callable[[int], bytes], digest: Any, size: int) -> None:
    """Feed the inflated content of a .filez (its deflate stream, from read) into digest, chunk by chunk,
    stopping one byte past the declared size: memory stays bounded whatever the stream expands to."""
    decomp = zlib.decompressobj(-15)
    total = 0
    try:
        while not decomp.eof and total <= size:
            chunk = decomp.unconsumed_tail or read(_CHUNK)
            if not chunk:
                break
            data = decomp.decompress(chunk, min(size + 1 - total, _CHUNK))
            total += len(data)
            digest.update(data)
    except zlib.error as exc:
        raise CorruptionError(f"corrupt compressed content: {exc}") from None
    if decomp.eof and not decomp.unused_data and read(1):
        raise CorruptionError("data follows the compressed content")
    check_inflated(decomp, total, size)


def check_inflated(decomp: Any, inflated: int, expected_size: int) -> None:
    """After inflating at most expected_size + 1 bytes: the stream must have ended exactly there."""
    if inflated > expected_size:
        raise CorruptionError(f"content inflates beyond the header size {expected_size}")
    if not decomp.eof:
        raise CorruptionError(f"truncated compressed content ({inflated} of {expected_size} bytes)")
    if inflated != expected_size:
        raise CorruptionError(f"content size {inflated} does not match header size {expected_size}")
    if decomp.unused_data:
        raise CorruptionError("data follows the compressed content")


def vardict(entries: list[tuple[str, str, Any]]) -> list[tuple[str, Variant]]:
    """Build an a{sv} value from (key, type, value) triples, keeping the order."""
    return [(key, Variant(sig, value)) for key, sig, value in entries]


def tombstone(commit_checksum: str) -> bytes:
    return gvariant.encode(VARDICT_TYPE, [("commit", Variant("ay", commit_checksum.encode() + b"\0"))])


def object_relpath(checksum: str, objtype: ObjectType, archive: bool) -> str:
    ext = objtype.value
    if objtype is ObjectType.FILE and archive:
        ext = "filez"
    return f"objects/{checksum[:2]}/{checksum[2:]}.{ext}"
