"""Rolling-checksum matching of two versions of a file, as ostree's static deltas do it: both are cut into
chunks where bup's rolling sum (a 64-byte window) hits a 13-bit pattern, chunks longer than 32 KiB are cut
at 32 KiB, and each chunk of the new version that equals a chunk of the old one (same key, same length, same
bytes) is a match the delta copies from the old object.

The key is ostree's: the CRC-32 of the first LENGTH bytes of the *file*, not of the chunk (ostree 2022.7 hands
zlib the buffer's start). So chunks only match while both files begin alike; a file edited near its start
gets no matches and goes to bsdiff, the better encoder for scattered edits. strata keeps the rule so that it
picks rollsum or bsdiff for the same files as ostree (upstream's own tests depend on that choice).

Pure: bytes in, matches out. bup's sum over a 64-byte window is, up to a constant, the window convolved with
the weights 64..1, so it is computed for every position at once by one big-integer multiplication: the bytes
spread into 3-byte slots times the weights in 3-byte slots leaves each window's sum in its own slot (at most
20 bits, so no slot carries into the next). A chunk start, where bup restarts the window with zeros, differs
from that continuous sum only in the chunk's first 63 bytes, which are recomputed with the zero padding.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

WINDOW = 64
CHAR_OFFSET = 31
BLOB_BITS = 13
BLOB_MASK = (1 << BLOB_BITS) - 1
BLOB_MAX = 8192 * 4
# The window sum s2 of bup weighs the newest byte 1 and the oldest WINDOW; with an all-zero initial window
# its start value exceeds that weighted sum by this constant.
_S2_EXCESS = WINDOW * (WINDOW - 1) * CHAR_OFFSET - CHAR_OFFSET * WINDOW * (WINDOW + 1) // 2


@dataclass(frozen=True)
class Chunk:
    crc: int  # of the file's first `length` bytes (see above)
    start: int
    length: int


@dataclass(frozen=True)
class Match:
    length: int
    to_start: int
    from_start: int


@dataclass(frozen=True)
class Matches:
    matches: list[Match]  # sorted by to_start
    total: int  # chunks of the new version
    bufmatches: int  # of them found in the old version
    match_size: int  # bytes they cover

    @property
    def match_ratio(self) -> int:
        return self.bufmatches * 100 // self.total if self.total else 0


_SLOT = 3  # bytes per position in the multiplication: a window's weighted sum needs 20 bits
_BLOCK = 1 << 20  # positions per multiplication (bounds the big integers to a few MB)
_WEIGHTS = int.from_bytes(b"".join((weight + 1).to_bytes(_SLOT, "little") for weight in range(WINDOW)), "little")
# s2 = the weighted sum of the bytes + the same weights over CHAR_OFFSET + bup's start excess
_SPLIT_SUM = (BLOB_MASK - CHAR_OFFSET * WINDOW * (WINDOW + 1) // 2 - _S2_EXCESS) % (BLOB_MASK + 1)


def _split_positions(data: bytes) -> list[int]:
    """Every position i where bup's sum over the 64 bytes ending at i (zero bytes before the start of data)
    has the split pattern, in ascending order."""
    low_byte, high_bits = _SPLIT_SUM & 0xFF, _SPLIT_SUM >> 8
    positions = []
    for block in range(0, len(data), _BLOCK):
        history = data[max(0, block - WINDOW + 1):block]
        window = history + data[block:block + _BLOCK]
        spread = bytearray(len(window) * _SLOT)
        spread[0::_SLOT] = window
        sums = (int.from_bytes(spread, "little") * _WEIGHTS).to_bytes((len(window) + WINDOW) * _SLOT, "little")
        lows, mids = sums[0::_SLOT][:len(window)], sums[1::_SLOT]
        index = lows.find(low_byte, len(history))
        while index >= 0:
            if mids[index] & (BLOB_MASK >> 8) == high_bits:
                positions.append(block + index - len(history))
            index = lows.find(low_byte, index + 1)
    return positions


def _restart_split(data: bytes, start: int, positions: list[int]) -> int:
    """bupsplit_find_ofs from `start`: the chunk length up to a split, or 0 if none before the end."""
    s1 = WINDOW * CHAR_OFFSET
    s2 = WINDOW * (WINDOW - 1) * CHAR_OFFSET
    for count, byte in enumerate(data[start:start + WINDOW - 1]):
        s1 = (s1 + byte) & 0xFFFFFFFF  # the window still drops the zeros it started with
        s2 = (s2 + s1 - WINDOW * CHAR_OFFSET) & 0xFFFFFFFF
        if (s2 & BLOB_MASK) == BLOB_MASK:
            return count + 1
    index = bisect.bisect_left(positions, start + WINDOW - 1)
    return positions[index] - start + 1 if index < len(positions) else 0


def chunks(data: bytes) -> Iterator[Chunk]:
    """ostree's rollsum chunks of data, in order."""
    positions = _split_positions(data)
    start = 0
    split_ended = False
    while start < len(data):
        remaining = len(data) - start
        length = 0 if split_ended else _restart_split(data, start, positions)
        if length == 0:
            split_ended = True
            length = min(BLOB_MAX, remaining)
        length = min(length, BLOB_MAX)
        yield Chunk(zlib.crc32(data[:length]), start, length)
        start += length


def compute_matches(old: bytes, new: bytes) -> Matches:
    """The chunks of new that old contains, found as ostree finds them."""
    by_crc: dict[int, list[Chunk]] = {}
    for chunk in chunks(old):
        by_crc.setdefault(chunk.crc, []).append(chunk)
    found: list[Match] = []
    total = size = 0
    for chunk in chunks(new):
        total += 1
        piece = new[chunk.start:chunk.start + chunk.length]
        for candidate in by_crc.get(chunk.crc, ()):
            if candidate.length == chunk.length and old[candidate.start:candidate.start + chunk.length] == piece:
                found.append(Match(chunk.length, chunk.start, candidate.start))
                size += chunk.length
                break
    return Matches(found, total, len(found), size)
