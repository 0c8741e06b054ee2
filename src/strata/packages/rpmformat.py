"""The on-disk structure of an RPM (lead, signature header, main header, payload) read with every size and
offset checked, and the package digests verified before anything else reads the file.

rpm's rules: the header digest (SHA-256, or SHA-1 for older packages) covers the main header; the payload
digest (RPMTAG_PAYLOADDIGEST, algorithm RPMTAG_PAYLOADDIGESTALGO) covers the compressed payload; packages
older than both carry an MD5 over header and payload."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from strata.errors import CorruptionError

LEAD_SIZE = 96
LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
INDEX_ENTRY_SIZE = 16
MAX_TAGS = 0xFFFF  # rpm refuses headers with more index entries (hdrchkTags)
MAX_STORE = 0x0FFFFFFF  # and stores larger than this (hdrchkData)
SIG_MD5, SIG_SHA1, SIG_SHA256 = 1004, 269, 273
TAG_PAYLOADDIGEST, TAG_PAYLOADDIGESTALGO = 5092, 5093
TYPE_INT32, TYPE_STRING, TYPE_BIN, TYPE_STRING_ARRAY, TYPE_I18NSTRING = 4, 6, 7, 8, 9
# OpenPGP hash algorithm numbers as rpm uses them for RPMTAG_PAYLOADDIGESTALGO.
HASH_ALGORITHMS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224", 12: "sha3_256",
                   14: "sha3_512"}
_CHUNK = 1 << 20

Value = int | str | bytes | list[int] | list[str]


@dataclass(frozen=True)
class HeaderBlob:
    """One header structure: its raw bytes (intro, index, store) and its index entries by tag."""

    raw: bytes
    entries: dict[int, tuple[int, int, int]]  # tag -> (type, offset in store, count)
    store_start: int  # offset of the store within raw

    def has(self, tag: int) -> bool:
        return tag in self.entries

    def value(self, tag: int) -> Value | None:
        """The tag's value, or None when absent; a value that does not fit its type is corruption."""
        found = self.entries.get(tag)
        if found is None:
            return None
        kind, offset, count = found
        store = memoryview(self.raw)[self.store_start:]
        if kind == TYPE_INT32:
            data = bytes(store[offset:offset + 4 * count])
            if len(data) != 4 * count:
                raise CorruptionError(f"header tag {tag} runs past the header")
            return list(struct.unpack(f">{count}I", data))
        if kind == TYPE_BIN:
            data = bytes(store[offset:offset + count])
            if len(data) != count:
                raise CorruptionError(f"header tag {tag} runs past the header")
            return data
        if kind in (TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING):
            strings = _strings(bytes(store[offset:]), 1 if kind == TYPE_STRING else count, tag)
            return strings[0] if kind == TYPE_STRING else strings
        raise CorruptionError(f"header tag {tag} has unexpected type {kind}")


def _strings(data: bytes, count: int, tag: int) -> list[str]:
    result = []
    position = 0
    for _ in range(count):
        end = data.find(b"\0", position)
        if end < 0:
            raise CorruptionError(f"header tag {tag} runs past the header")
        result.append(data[position:end].decode("utf-8", "surrogateescape"))
        position = end + 1
    return result


@dataclass(frozen=True)
class RpmLayout:
    lead: bytes
    signature: HeaderBlob
    header: HeaderBlob
    payload_start: int

    @property
    def header_bytes(self) -> bytes:
        """Lead, signature header (with its padding) and main header: what precedes the payload."""
        padding = b"\0" * (-len(self.signature.raw) % 8)
        return self.lead + self.signature.raw + padding + self.header.raw


def read_layout(source: BinaryIO) -> RpmLayout:
    """Read lead and headers from the start of source, leaving it at the payload.
    Raises CorruptionError with the reason (not naming the package)."""
    lead = _read_exact(source, LEAD_SIZE, "lead")
    if lead[:4] != LEAD_MAGIC:
        raise CorruptionError("no RPM lead")
    signature = _read_header(source, "signature header")
    _read_exact(source, -len(signature.raw) % 8, "signature header padding")
    header = _read_header(source, "header")
    return RpmLayout(lead, signature, header, LEAD_SIZE + len(signature.raw) + (-len(signature.raw) % 8)
                     + len(header.raw))


def _read_exact(source: BinaryIO, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise CorruptionError(f"truncated {what}")
    return data


def _read_header(source: BinaryIO, what: str) -> HeaderBlob:
    intro = _read_exact(source, 16, what)
    if intro[:4] != HEADER_MAGIC:
        raise CorruptionError(f"bad {what} magic")
    count, store_size = struct.unpack(">II", intro[8:16])
    if count > MAX_TAGS or store_size > MAX_STORE:
        raise CorruptionError(f"{what} too large ({count} tags, {store_size} bytes)")
    index = _read_exact(source, count * INDEX_ENTRY_SIZE, what)
    store = _read_exact(source, store_size, what)
    entries: dict[int, tuple[int, int, int]] = {}
    for position in range(0, len(index), INDEX_ENTRY_SIZE):
        tag, kind, offset, items = struct.unpack(">IIII", index[position:position + INDEX_ENTRY_SIZE])
        if offset >= max(store_size, 1) or items > MAX_STORE:
            raise CorruptionError(f"{what} tag {tag} points outside the header")
        entries.setdefault(tag, (kind, offset, items))
    return HeaderBlob(intro + index + store, entries, 16 + len(index))


def verify_digests(layout: RpmLayout, payload: Iterable[bytes]) -> None:
    """Check the header digest and the payload digest (or the legacy MD5) against the payload chunks.
    Raises CorruptionError naming the digest that does not match or is missing."""
    header_digest = _header_digest(layout)
    payload_digest = _payload_digest(layout)
    md5_expected = layout.signature.value(SIG_MD5)
    if header_digest is None and md5_expected is None:
        raise CorruptionError("no header digest")
    if payload_digest is None and md5_expected is None:
        raise CorruptionError("no payload digest")
    if header_digest is not None and _hexdigest(header_digest[0], layout.header.raw) != header_digest[1]:
        raise CorruptionError("header digest mismatch")
    payload_hash = hashlib.new(payload_digest[0]) if payload_digest else None
    md5 = hashlib.md5(layout.header.raw) if md5_expected is not None else None
    for chunk in payload:
        if payload_hash is not None:
            payload_hash.update(chunk)
        if md5 is not None:
            md5.update(chunk)
    if payload_hash is not None and payload_digest and payload_hash.hexdigest() != payload_digest[1]:
        raise CorruptionError("payload digest mismatch")
    if md5 is not None and md5.digest() != md5_expected:
        raise CorruptionError("MD5 digest mismatch")


def _header_digest(layout: RpmLayout) -> tuple[str, str] | None:
    for tag, algorithm in ((SIG_SHA256, "sha256"), (SIG_SHA1, "sha1")):
        value = layout.signature.value(tag)
        if value is not None:
            return algorithm, _as_text(value, tag)
    return None


def _payload_digest(layout: RpmLayout) -> tuple[str, str] | None:
    value = layout.header.value(TAG_PAYLOADDIGEST)
    if value is None:
        return None
    algo_value = layout.header.value(TAG_PAYLOADDIGESTALGO)
    number = algo_value[0] if isinstance(algo_value, list) and algo_value else 8
    algorithm = HASH_ALGORITHMS.get(int(number))
    if algorithm is None:
        raise CorruptionError(f"unsupported payload digest algorithm {number}")
    return algorithm, _as_text(value, TAG_PAYLOADDIGEST)


def _as_text(value: Value, tag: int) -> str:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    if isinstance(value, str):
        return value
    raise CorruptionError(f"header tag {tag} is not a digest string")


def _hexdigest(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def read_chunks(source: BinaryIO) -> Iterable[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk
