"""GVariant serialisation in normal form, the subset OSTree objects use.

Pure code: bytes in, values out. Integers of type u/t (and n/q/i/x) are big-endian, as OSTree
byte-swaps them before storing; framing offsets are little-endian as GVariant defines them.

Value mapping: y/n/q/i/u/x/t -> int, b -> bool, d -> float, s/o/g -> str, ay -> bytes,
v -> Variant, aT -> list, a{KV} -> list of (key, value) pairs (order kept), (..) -> tuple,
mT -> value or None.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from strata.errors import CorruptionError

_FIXED_BASIC = {"y": 1, "b": 1, "n": 2, "q": 2, "i": 4, "u": 4, "h": 4, "x": 8, "t": 8, "d": 8}
# GLib refuses values nested deeper than this (G_VARIANT_MAX_RECURSION_DEPTH); so do we, which also keeps a
# hostile variant-in-variant chain from exhausting Python's stack.
MAX_DEPTH = 128
_STRUCT = {"y": ">B", "b": ">?", "n": ">h", "q": ">H", "i": ">i", "u": ">I", "h": ">I", "x": ">q", "t": ">Q",
           "d": ">d"}


@dataclass(frozen=True)
class Variant:
    """A value of type v: the inner type string and the inner value."""

    type: str
    value: Any


@dataclass(frozen=True)
class _Type:
    code: str  # full type string
    kind: str  # 'basic', 'array', 'maybe', 'tuple', 'variant', 'string'
    children: tuple[_Type, ...]
    align: int
    fixed_size: int | None  # None when variable-size


def _split_one(sig: str, pos: int) -> int:
    """Return the end index of the single complete type starting at sig[pos]."""
    c = sig[pos]
    if c in "am":
        return _split_one(sig, pos + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        pos += 1
        while sig[pos] != close:
            pos = _split_one(sig, pos)
        return pos + 1
    if c in _FIXED_BASIC or c in "sogv":
        return pos + 1
    raise ValueError(f"bad GVariant type string {sig!r}")


@lru_cache(maxsize=256)
def parse_type(sig: str) -> _Type:
    if not sig or type_depth(sig) > MAX_DEPTH or _split_one(sig, 0) != len(sig):
        raise ValueError(f"not a single complete GVariant type: {sig!r}")
    return _parse(sig)


def type_depth(sig: str) -> int:
    """How deeply containers nest in a type string, counted without recursion (malformed strings are left
    to the parser, which then recurses at most this deep)."""
    deepest = open_depth = pending = 0
    opened: list[int] = []
    for char in sig:
        if char in "am":
            pending += 1
            deepest = max(deepest, open_depth + pending)
        elif char in "({":
            opened.append(pending + 1)
            open_depth += pending + 1
            pending = 0
            deepest = max(deepest, open_depth)
        elif char in ")}":
            open_depth -= opened.pop() if opened else 0
            pending = 0
        else:
            pending = 0
    return deepest


def _parse(sig: str) -> _Type:
    c = sig[0]
    if c in _FIXED_BASIC:
        return _Type(sig, "basic", (), _FIXED_BASIC[c], _FIXED_BASIC[c])
    if c in "sog":
        return _Type(sig, "string", (), 1, None)
    if c == "v":
        return _Type(sig, "variant", (), 8, None)
    if c in "am":
        child = parse_type(sig[1:])
        return _Type(sig, "array" if c == "a" else "maybe", (child,), child.align, None)
    members = []
    pos = 1
    while pos < len(sig) - 1:
        end = _split_one(sig, pos)
        members.append(parse_type(sig[pos:end]))
        pos = end
    align = max((m.align for m in members), default=1)
    fixed: int | None = None
    if all(m.fixed_size is not None for m in members):
        size = 0
        for m in members:
            size = _round_up(size, m.align) + (m.fixed_size or 0)
        fixed = max(_round_up(size, align), 1)
    return _Type(sig, "tuple", tuple(members), align, fixed)


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) & ~(align - 1)


def offset_width(body_len: int, count: int) -> int:
    """Width of framing offsets for a container with this body length and number of offsets."""
    for width in (1, 2, 4):
        if body_len + width * count <= (1 << (8 * width)) - 1:
            return width
    return 8


def _width_for_size(size: int) -> int:
    if size <= 0xFF:
        return 1
    if size <= 0xFFFF:
        return 2
    if size <= 0xFFFFFFFF:
        return 4
    return 8


def _pack_offsets(offsets: list[int], body_len: int) -> bytes:
    if not offsets:
        return b""
    width = offset_width(body_len, len(offsets))
    return b"".join(o.to_bytes(width, "little") for o in offsets)


# ---------------------------------------------------------------- encoding


def encode(sig: str, value: Any) -> bytes:
    """Serialise value as GVariant type sig in normal form."""
    out = bytearray()
    _enc(parse_type(sig), value, out)
    return bytes(out)


def _pad(out: bytearray, start: int, align: int) -> None:
    rel = len(out) - start
    pad = _round_up(rel, align) - rel
    if pad:
        out += b"\0" * pad


def _enc(t: _Type, value: Any, out: bytearray) -> None:
    kind = t.kind
    if kind == "basic":
        out += struct.pack(_STRUCT[t.code], value)
    elif kind == "string":
        data = value.encode("utf-8")
        if b"\0" in data:
            raise ValueError("string contains NUL")
        out += data + b"\0"
    elif kind == "variant":
        start = len(out)
        _enc(parse_type(value.type), value.value, out)
        del start
        out += b"\0" + value.type.encode("ascii")
    elif kind == "array":
        _enc_array(t.children[0], value, out)
    elif kind == "maybe":
        if value is not None:
            _enc(t.children[0], value, out)
            if t.children[0].fixed_size is None:
                out += b"\0"
    else:
        _enc_tuple(t, value, out)


def _enc_array(elem: _Type, items: Any, out: bytearray) -> None:
    if elem.code == "y":
        out += bytes(items)
        return
    start = len(out)
    if elem.fixed_size is not None:
        for item in items:
            _enc(elem, item, out)
        return
    ends: list[int] = []
    for item in items:
        _pad(out, start, elem.align)
        _enc(elem, item, out)
        ends.append(len(out) - start)
    out += _pack_offsets(ends, len(out) - start)


def _enc_tuple(t: _Type, values: Any, out: bytearray) -> None:
    start = len(out)
    members = t.children
    if len(values) != len(members):
        raise ValueError(f"tuple {t.code} needs {len(members)} values, got {len(values)}")
    ends: list[int] = []
    last = len(members) - 1
    for i, (member, val) in enumerate(zip(members, values, strict=True)):
        _pad(out, start, member.align)
        _enc(member, val, out)
        if member.fixed_size is None and i != last:
            ends.append(len(out) - start)
    if t.fixed_size is not None:
        _pad(out, start, t.align)
        if len(out) == start:
            out += b"\0"
        return
    ends.reverse()
    out += _pack_offsets(ends, len(out) - start)


# ---------------------------------------------------------------- decoding


def decode(sig: str, data: bytes, *, strict: bool = True) -> Any:
    """Parse data as GVariant type sig. With strict, non-normal data raises CorruptionError."""
    t = parse_type(sig)
    try:
        value = _dec(t, memoryview(data), 0)
        if strict and encode(sig, value) != bytes(data):
            raise CorruptionError(f"GVariant {sig} is not in normal form")
    except (ValueError, IndexError, struct.error, UnicodeError) as exc:
        raise CorruptionError(f"malformed GVariant {sig}: {_short(exc)}") from None
    return value


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _dec(t: _Type, data: memoryview, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    kind = t.kind
    if kind == "basic":
        if len(data) != t.fixed_size:
            raise ValueError(f"{t.code}: expected {t.fixed_size} bytes, got {len(data)}")
        return struct.unpack(_STRUCT[t.code], data)[0]
    if kind == "string":
        raw = bytes(data)
        if not raw or raw[-1] != 0 or b"\0" in raw[:-1]:
            raise ValueError("string not NUL-terminated")
        return raw[:-1].decode("utf-8")
    if kind == "variant":
        raw = bytes(data)
        sep = raw.rfind(b"\0")
        if sep < 0:
            raise ValueError("variant without type")
        inner = raw[sep + 1:].decode("ascii")
        return Variant(inner, _dec(parse_type(inner), data[:sep], depth + 1))
    if kind == "array":
        return _dec_array(t.children[0], data, depth + 1)
    if kind == "maybe":
        if len(data) == 0:
            return None
        child = t.children[0]
        return _dec(child, data if child.fixed_size is not None else data[:-1], depth + 1)
    return _dec_tuple(t, data, depth + 1)


def _dec_array(elem: _Type, data: memoryview, depth: int) -> Any:
    size = len(data)
    if elem.code == "y":
        return bytes(data)
    if elem.fixed_size is not None:
        n, rem = divmod(size, elem.fixed_size)
        if rem:
            raise ValueError("array size not a multiple of element size")
        step = elem.fixed_size
        return [_dec(elem, data[i * step:(i + 1) * step], depth) for i in range(n)]
    if size == 0:
        return []
    width = _width_for_size(size)
    table_start = int.from_bytes(data[size - width:], "little")
    if table_start > size or (size - table_start) % width:
        raise ValueError("bad array framing")
    count = (size - table_start) // width
    items = []
    pos = 0
    for i in range(count):
        off = table_start + i * width
        end = int.from_bytes(data[off:off + width], "little")
        pos = _round_up(pos, elem.align)
        if end < pos or end > table_start:
            raise ValueError("bad array element offset")
        items.append(_dec(elem, data[pos:end], depth))
        pos = end
    return items


def _dec_tuple(t: _Type, data: memoryview, depth: int) -> Any:
    size = len(data)
    if t.fixed_size is not None and size != t.fixed_size:
        raise ValueError(f"{t.code}: expected {t.fixed_size} bytes")
    width = _width_for_size(size) if t.fixed_size is None else 0
    table_end = size
    pos = 0
    values = []
    last = len(t.children) - 1
    for i, member in enumerate(t.children):
        pos = _round_up(pos, member.align)
        if member.fixed_size is not None:
            end = pos + member.fixed_size
        elif i == last:
            end = table_end
        else:
            table_end -= width
            end = int.from_bytes(data[table_end:table_end + width], "little")
        if end < pos or end > table_end:
            raise ValueError("bad tuple framing")
        values.append(_dec(member, data[pos:end], depth))
        pos = end
    return tuple(values)


def vardict_get(entries: list[tuple[str, Variant]], key: str, default: Any = None) -> Any:
    """Look up a key of an a{sv} as decoded (first match), returning the inner value."""
    for k, v in entries:
        if k == key:
            return v.value
    return default


def vardict_lookup(entries: list[tuple[str, Variant]], key: str, sig: str, default: Any = None) -> Any:
    """The value of key if it has type sig; a value of another type counts as absent (as g_variant_lookup
    with a format string does), so untrusted metadata cannot hand a caller an unexpected type."""
    for k, v in entries:
        if k == key:
            return v.value if v.type == sig else default
    return default


_INT_SIZES = {"n": 2, "q": 2, "i": 4, "u": 4, "h": 4, "x": 8, "t": 8}


def byteswapped(sig: str, value: Any) -> Any:
    """value with every number wider than a byte in the other byte order (GLib's g_variant_byteswap).

    This codec reads and writes numbers big-endian, as ostree stores its own keys; ostree stores the values of
    `--add-metadata` in the machine's order, so they pass through this on little-endian machines."""
    kind = parse_type(sig)
    code = sig[0]
    if kind.kind == "variant":
        return Variant(value.type, byteswapped(value.type, value.value))
    if code in "nqiuhxt":
        size, signed = _INT_SIZES[code], code in "nix"
        return int.from_bytes(int(value).to_bytes(size, "little", signed=signed), "big", signed=signed)
    if code == "d":
        return struct.unpack("<d", struct.pack(">d", value))[0]
    if kind.kind == "array" and sig != "ay":
        return [byteswapped(sig[1:], item) for item in value]
    if kind.kind == "maybe":
        return None if value is None else byteswapped(sig[1:], value)
    if kind.kind == "tuple":
        return tuple(byteswapped(member.code, item) for member, item in zip(kind.children, value, strict=True))
    return value


def machine_order(entries: list[tuple[str, Variant]]) -> list[tuple[str, Variant]]:
    """a{sv} entries between our (big-endian) reading and the machine's byte order, both ways."""
    if sys.byteorder == "big":
        return entries
    return [(key, byteswapped("v", value)) for key, value in entries]
