"""A summary file as ostree prints it (`remote summary`, `summary --view`): each ref with its commit, size and
metadata, the refs of other collections, then the summary's own metadata with ostree's names for the known
keys. The summary may come from a server: it is decoded leniently, as GLib does, and only printed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from strata.image import gvariant, inspect
from strata.image.gvariant import Variant
from strata.image.summary import SUMMARY_TYPE
from strata.units import human_size

_REFS_TYPE = "a(s(taya{sv}))"
_COLLECTION_ID = "ostree.summary.collection-id"
_COLLECTION_MAP = "ostree.summary.collection-map"
_REF_KEYS = {"ostree.commit.timestamp": "Timestamp", "ostree.commit.version": "Version"}
_SUMMARY_KEYS = {"ostree.static-deltas": "Static Deltas", "ostree.summary.last-modified": "Last-Modified",
                 "ostree.summary.expires": "Expires", _COLLECTION_ID: "Collection ID",
                 _COLLECTION_MAP: "Collection Map", "ostree.summary.mode": "Repository Mode",
                 "ostree.summary.tombstone-commits": "Has Tombstone Commits"}
_REPO_MODES = ("bare", "archive", "archive-z2", "bare-user", "bare-user-only", "bare-split-xattrs")


def summary_lines(data: bytes, *, raw: bool = False) -> list[str]:
    value = gvariant.decode(SUMMARY_TYPE, data, strict=False)
    if raw:
        return [inspect.format_typed(SUMMARY_TYPE, value)]
    refs, metadata = value
    collection = gvariant.vardict_lookup(metadata, _COLLECTION_ID, "s")
    lines = _ref_lines(collection, refs)
    for other, other_refs in gvariant.vardict_lookup(metadata, _COLLECTION_MAP, f"a{{s{_REFS_TYPE}}}", []):
        lines += _ref_lines(other, other_refs)
    for key, item in metadata:
        lines.append(_metadata_line(key, item, _SUMMARY_KEYS, ""))
    return lines


def _ref_lines(collection: str | None, refs: list[Any]) -> list[str]:
    lines = []
    for name, (size, checksum, metadata) in refs:
        lines.append(f"* {name}" if collection is None else f"* ({collection}, {name})")
        lines.append(f"    Latest Commit ({human_size(_little_endian(size))}):")
        lines.append(f"      {bytes(checksum).hex() if len(checksum) == 32 else 'Invalid checksum length'}")
        lines += [_metadata_line(key, item, _REF_KEYS, "    ") for key, item in metadata]
        lines.append("")
    return lines


def _metadata_line(key: str, item: Variant, names: dict[str, str], indent: str) -> str:
    pretty = names.get(key)
    text = _pretty_value(key, item) if pretty else None
    if pretty is None or text is None:
        return f"{indent}{key}: {inspect.format_typed(item.type, item.value, False)}"
    return f"{indent}{pretty} ({key}): {text}"


def _pretty_value(key: str, item: Variant) -> str | None:
    """ostree's text for a known key, or None when the value has not the type that key should have."""
    expected = {"ostree.commit.timestamp": "t", "ostree.summary.last-modified": "t", "ostree.summary.expires": "t",
                "ostree.commit.version": "s", _COLLECTION_ID: "s", "ostree.summary.mode": "s",
                "ostree.summary.tombstone-commits": "b"}.get(key)
    if expected is not None and item.type != expected:
        return None
    if expected == "t":
        return _local_time(int(item.value))
    if key == "ostree.summary.mode":
        return item.value if item.value in _REPO_MODES else f"Invalid (\u2018{item.value}\u2019)"
    if expected == "b":
        return "Yes" if item.value else "No"
    if expected == "s":
        return str(item.value)
    if key == _COLLECTION_MAP:
        return "(printed above)"
    return inspect.format_typed(item.type, item.value, False)


def _little_endian(value: int) -> int:
    """The commit size is stored in the writer's (little-endian) byte order, the timestamps big-endian as
    the codec reads them (see summary.parse_summary)."""
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def _local_time(seconds: int) -> str:
    """GLib's %FT%T%:::z: local time, the offset in hours (and minutes only when there are some)."""
    try:
        moment = datetime.fromtimestamp(seconds).astimezone()
    except (OverflowError, OSError, ValueError):
        return "invalid"
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    zone = f"{sign}{hours:02d}" + (f":{rest:02d}" if rest else "")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + zone
