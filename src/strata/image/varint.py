"""The unsigned LEB128 varints of ostree's static delta operations and `ostree.sizes` metadata."""

from __future__ import annotations

from strata.errors import CorruptionError

MAX_BITS = 64  # a longer run of continuation bytes is corrupt, not a huge number


def encode(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def decode(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """The varint at pos and the position after it; `what` names the container in errors."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CorruptionError(f"truncated varint in {what}")
        if shift >= MAX_BITS:
            raise CorruptionError(f"overlong varint in {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
