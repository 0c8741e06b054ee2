"""bsdiff patches in the form ostree's static deltas carry them (the BSPATCH operation).

ostree links Matthew Endsley's bsdiff library and stores its raw patch stream: no "BSDIFF40" header and no
bzip2 (the delta part is compressed as a whole). The stream is a run of records, each a control triple
(x, y, z) of 8-byte sign-magnitude little-endian integers, then x bytes added byte-wise to the old file
from the current old position, then y bytes copied as they are; the old position then moves by z. The
patch ends when the new file has its declared size.

The suffix sorting and the byte loops run in the C extension of the `bsdiff4` package (its "BSDIFF40"
container is not used): strata only converts between its separate control/diff/extra blocks and the
interleaved stream, and checks every control value of an untrusted patch before the C code sees it.
"""

from __future__ import annotations

import bsdiff4.core

from strata.errors import CorruptionError

_CONTROL = 24
_INT_MAX = (1 << 31) - 1


def encode_offset(value: int) -> bytes:
    magnitude = abs(value)
    raw = bytearray(magnitude.to_bytes(8, "little"))
    if value < 0:
        raw[7] |= 0x80
    return bytes(raw)


def decode_offset(raw: bytes) -> int:
    magnitude = int.from_bytes(raw[:7] + bytes([raw[7] & 0x7F]), "little")
    return -magnitude if raw[7] & 0x80 else magnitude


def diff(old: bytes, new: bytes) -> bytes:
    """The patch stream that turns old into new."""
    control, added, extra = bsdiff4.core.diff(old, new)
    out = bytearray()
    added_pos = extra_pos = 0
    for offset in range(0, len(control), _CONTROL):
        x = decode_offset(control[offset:offset + 8])
        y = decode_offset(control[offset + 8:offset + 16])
        out += control[offset:offset + _CONTROL]
        out += added[added_pos:added_pos + x]
        out += extra[extra_pos:extra_pos + y]
        added_pos += x
        extra_pos += y
    return bytes(out)


def patch(old: bytes, stream: bytes, new_size: int) -> bytes:
    """new_size bytes made from old by the patch stream; a malformed stream is a CorruptionError."""
    control = bytearray()
    added = bytearray()
    extra = bytearray()
    pos = new_pos = 0
    while new_pos < new_size:
        if pos + _CONTROL > len(stream):
            raise CorruptionError("bsdiff patch ends before the file it makes")
        x = decode_offset(stream[pos:pos + 8])
        y = decode_offset(stream[pos + 8:pos + 16])
        z = decode_offset(stream[pos + 16:pos + 24])
        if not (0 <= x <= _INT_MAX and 0 <= y <= _INT_MAX) or new_pos + x + y > new_size:
            raise CorruptionError("bsdiff patch has an invalid control record")
        if abs(z) > _INT_MAX:
            raise CorruptionError("bsdiff patch has an invalid control record")
        body = pos + _CONTROL
        if body + x + y > len(stream):
            raise CorruptionError("bsdiff patch ends before the file it makes")
        control += stream[pos:body]
        added += stream[body:body + x]
        extra += stream[body + x:body + x + y]
        pos = body + x + y
        new_pos += x + y
    try:
        result: bytes = bsdiff4.core.patch(old, new_size, bytes(control), bytes(added), bytes(extra))
    except ValueError as exc:
        raise CorruptionError(f"bsdiff patch does not apply: {exc}") from None
    return result
