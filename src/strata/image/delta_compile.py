"""Writing static deltas as ostree does (see `deltas` for the format).

The objects the target commit adds over the source go into parts of at most --max-chunk-size megabytes:
metadata first, then modified files, then new files, then symlinks. A new regular file is "modified" when
the source has a file of the same base name (or the same name before its first dot) within 30% of its size.
A modified file whose rollsum chunks are at least half found in the old version is written by copying those
chunks from the old object (SET_READ_SOURCE + WRITE) and the rest from the payload; otherwise, when both
together are under --max-bsdiff-size megabytes, as a bsdiff patch of the old object (BSPATCH). Files over
--min-fallback-size megabytes that are neither go to the fallback list, fetched one by one by clients.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata.errors import InvalidInputError, NotFoundError
from strata.image import bsdiff, gvariant, rollsum, varint
from strata.image import objects as O
from strata.image.deltas import (
    ENDIANNESS_KEY,
    OP_BSPATCH,
    OP_CLOSE,
    OP_OPEN,
    OP_OPEN_SPLICE_AND_CLOSE,
    OP_SET_READ_SOURCE,
    OP_UNSET_READ_SOURCE,
    OP_WRITE,
    PART_TYPE,
    SIGNED_MAGIC,
    SIGNED_TYPE,
    SUPERBLOCK_TYPE,
    delta_dir,
    delta_relpath,
    swap64,
)
from strata.image.fsutil import atomic_write
from strata.image.gvariant import Variant
from strata.image.objects import ObjectType
from strata.image.repo import Repo
from strata.image.traverse import commit_objects

MEGABYTE = 1000 * 1000
SIMILARITY_PERCENT = 30
ROLLSUM_MIN_MATCH_PERCENT = 50
UNDELTABLE_EXTENSIONS = ("xz", "bz2")  # compressed already; .gz is left in for --rsyncable archives

Signer = Callable[[bytes], list[tuple[str, Variant]]]


@dataclass(frozen=True)
class DeltaOptions:
    min_fallback_size: int = 4  # megabytes; 0: never fall back
    max_bsdiff_size: int = 128  # megabytes, old and new file together
    max_chunk_size: int = 32  # megabytes of payload per part
    bsdiff: bool = True
    inline: bool = False  # parts inside the superblock
    endianness: str = "l"  # 'l' or 'B': byte order of the size fields
    filename: Path | None = None  # superblock path outside the repository; parts go beside it
    compress: bool = True
    signer: Signer | None = None  # signature entries for the superblock bytes


@dataclass
class PartSummary:
    objects: int
    size: int
    unpacked_size: int


@dataclass
class DeltaStats:
    """What the generator did, for ostree's verbose report and the benchmarks."""

    path: Path = Path()
    modified: int = 0
    new_metadata: int = 0
    new_regular: int = 0
    new_symlinks: int = 0
    rollsum: int = 0
    rollsum_bytes: int = 0
    bsdiff: int = 0
    fallback: int = 0
    loose_size: int = 0
    parts: list[PartSummary] = field(default_factory=list)

    def report(self) -> list[str]:
        lines = [f"modified: {self.modified}",
                 f"new reachable: metadata={self.new_metadata} content regular={self.new_regular} "
                 f"symlink={self.new_symlinks}",
                 f"rollsum for {self.rollsum}/{self.modified} modified"]
        lines += [f"part {n} n:{p.objects} compressed:{p.size} uncompressed:{p.unpacked_size}"
                  for n, p in enumerate(self.parts, 1)]
        lines += [f"uncompressed={sum(p.unpacked_size for p in self.parts)} "
                  f"compressed={sum(p.size for p in self.parts)} loose={self.loose_size}",
                  f"rollsum={self.rollsum} objects, {self.rollsum_bytes} bytes",
                  f"bsdiff={self.bsdiff} objects"]
        return lines


# ---------------------------------------------------------------- what is new and what it resembles


@dataclass
class _SizeNames:
    checksum: str
    size: int
    names: list[str] = field(default_factory=list)

    def is_candidate(self) -> bool:
        if self.size == 0:
            return False
        return not any(name.rpartition(".")[2] in UNDELTABLE_EXTENSIONS for name in self.names if "." in name)


def content_info(repo: Repo, checksum: str) -> tuple[O.FileMeta, int]:
    """A content object's metadata and content size, without reading the content."""
    path = repo.object_path(checksum, ObjectType.FILE)
    if repo.is_archive:
        return repo.archive_header(checksum)
    meta = repo.read_file_meta(checksum)
    return meta, 0 if meta.is_symlink else os.stat(path).st_size


def _sizenames(repo: Repo, commit: str, only: set[str] | None,
               infos: dict[str, tuple[O.FileMeta, int]]) -> list[_SizeNames]:
    """Regular files of a commit (restricted to `only`) with their sizes and base names, smallest first."""
    found: dict[str, _SizeNames] = {}
    stack = [repo.load_commit(commit).root_tree]
    seen: set[str] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        tree = repo.load_dirtree(current)
        for name, checksum in tree.files.items():
            if only is not None and checksum not in only:
                continue
            entry = found.get(checksum)
            if entry is None:
                if checksum not in infos:
                    infos[checksum] = content_info(repo, checksum)
                meta, size = infos[checksum]
                if meta.is_symlink:
                    continue
                entry = found[checksum] = _SizeNames(checksum, size)
            entry.names.append(name)
        stack.extend(sub_tree for sub_tree, _meta in tree.dirs.values())
    return sorted(found.values(), key=lambda entry: entry.size)


def _names_intersect(first: list[str], second: list[str], fuzzy: bool) -> bool:
    """A shared base name; fuzzy compares only what comes before the first dot when both names have one."""
    for a in first:
        a_dot = a.find(".")
        for b in second:
            b_dot = b.find(".")
            if fuzzy and a_dot >= 0 and b_dot > 0 and a_dot == b_dot:
                if a[:a_dot] == b[:b_dot]:
                    return True
            elif a == b:
                return True
    return False


def similar_objects(repo: Repo, source: str, target: str, new_regular: set[str],
                    infos: dict[str, tuple[O.FileMeta, int]]) -> dict[str, str]:
    """new file object -> the source's object it most likely modifies (same name, size within 30%)."""
    from_sizes = _sizenames(repo, source, None, infos)
    to_sizes = _sizenames(repo, target, new_regular, infos)
    modified: dict[str, str] = {}
    lower = 0
    for new in to_sizes:
        if not new.is_candidate():
            continue
        low = int(new.size * (1.0 - SIMILARITY_PERCENT / 100.0))
        high = int(new.size * (1.0 + SIMILARITY_PERCENT / 100.0))
        for fuzzy in (False, True):
            match = None
            for position in range(lower, len(from_sizes)):
                old = from_sizes[position]
                if not old.is_candidate():
                    continue
                if old.size < low:
                    lower += 1
                    continue
                if old.size > high:
                    break
                if _names_intersect(old.names, new.names, fuzzy):
                    match = old.checksum
                    break
            if match is not None:
                modified[new.checksum] = match
                break
    return modified


# ---------------------------------------------------------------- parts


class _PartBuilder:
    def __init__(self) -> None:
        self.modes: list[tuple[int, int, int]] = []
        self.mode_index: dict[tuple[int, int, int], int] = {}
        self.xattrs: list[list[tuple[bytes, bytes]]] = []
        self.xattr_index: dict[tuple[tuple[bytes, bytes], ...], int] = {}
        self.payload = bytearray()
        self.ops = bytearray()
        self.objects = bytearray()
        self.count = 0
        self.unpacked = 0

    def _op(self, opcode: int, *arguments: int) -> None:
        self.ops.append(opcode)
        for value in arguments:
            self.ops += varint.encode(value)

    def _record(self, objtype: ObjectType, checksum: str, size: int) -> None:
        self.objects += bytes([objtype.number]) + bytes.fromhex(checksum)
        self.count += 1
        self.unpacked += size

    def _mode_and_xattrs(self, meta: O.FileMeta) -> tuple[int, int]:
        mode = (meta.uid, meta.gid, meta.mode)
        if mode not in self.mode_index:
            self.mode_index[mode] = len(self.modes)
            self.modes.append(mode)
        xattrs = tuple((name + b"\0", value) for name, value in meta.xattrs)
        if xattrs not in self.xattr_index:
            self.xattr_index[xattrs] = len(self.xattrs)
            self.xattrs.append(list(xattrs))
        return self.mode_index[mode], self.xattr_index[xattrs]

    def _append_payload(self, data: bytes) -> int:
        offset = len(self.payload)
        self.payload += data
        return offset

    def add_metadata(self, objtype: ObjectType, checksum: str, data: bytes) -> None:
        self._record(objtype, checksum, len(data))
        self._op(OP_OPEN_SPLICE_AND_CLOSE, len(data), self._append_payload(data))

    def add_file(self, checksum: str, meta: O.FileMeta, content: bytes, size: int) -> None:
        self._record(ObjectType.FILE, checksum, size)
        data = meta.symlink_target.encode("utf-8", "surrogateescape") if meta.is_symlink else content
        mode_index, xattr_index = self._mode_and_xattrs(meta)
        self._op(OP_OPEN_SPLICE_AND_CLOSE, mode_index, xattr_index, len(data), self._append_payload(data))

    def add_rollsum(self, checksum: str, meta: O.FileMeta, new: bytes, source: str,
                    matches: rollsum.Matches) -> None:
        self._record(ObjectType.FILE, checksum, len(new))
        mode_index, xattr_index = self._mode_and_xattrs(meta)
        source_offset = self._append_payload(bytes.fromhex(source))
        self._op(OP_OPEN, mode_index, xattr_index, len(new))
        written = 0
        reading_source = False
        for match in matches.matches:
            if match.to_start > written:
                if reading_source:
                    self._op(OP_UNSET_READ_SOURCE)
                    reading_source = False
                self._write_payload(new[written:match.to_start])
                written = match.to_start
            if not reading_source:
                self._op(OP_SET_READ_SOURCE, source_offset)
                reading_source = True
            self._op(OP_WRITE, match.length, match.from_start)
            written += match.length
        if reading_source:
            self._op(OP_UNSET_READ_SOURCE)
        if written < len(new):
            self._write_payload(new[written:])
        self._op(OP_CLOSE)

    def _write_payload(self, data: bytes) -> None:
        self._op(OP_WRITE, len(data), self._append_payload(data))

    def add_bsdiff(self, checksum: str, meta: O.FileMeta, old: bytes, new: bytes, source: str) -> None:
        self._record(ObjectType.FILE, checksum, len(new))
        mode_index, xattr_index = self._mode_and_xattrs(meta)
        self._op(OP_SET_READ_SOURCE, self._append_payload(bytes.fromhex(source)))
        self._op(OP_OPEN, mode_index, xattr_index, len(new))
        patch = bsdiff.diff(old, new)
        self._op(OP_BSPATCH, self._append_payload(patch), len(patch))
        self._op(OP_CLOSE)
        self._op(OP_UNSET_READ_SOURCE)

    def serialize(self, compress: bool) -> bytes:
        body = gvariant.encode(PART_TYPE, (self.modes, self.xattrs, bytes(self.payload), bytes(self.ops)))
        if compress:
            return b"x" + lzma.compress(body, format=lzma.FORMAT_XZ)
        return b"\0" + body


@dataclass
class _Plan:
    metadata: list[tuple[str, ObjectType]] = field(default_factory=list)
    regular: list[str] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)
    rollsums: dict[str, tuple[str, rollsum.Matches]] = field(default_factory=dict)
    bsdiffs: dict[str, str] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    infos: dict[str, tuple[O.FileMeta, int]] = field(default_factory=dict)


def _plan(repo: Repo, source: str | None, target: str, options: DeltaOptions, stats: DeltaStats) -> _Plan:
    plan = _Plan()
    have = set(commit_objects(repo, source)) if source is not None else set()
    for checksum, objtype in dict.fromkeys(commit_objects(repo, target)):
        if (checksum, objtype) in have:
            continue
        if objtype.is_meta:
            plan.metadata.append((checksum, objtype))
            continue
        plan.infos[checksum] = content_info(repo, checksum)
        (plan.symlinks if plan.infos[checksum][0].is_symlink else plan.regular).append(checksum)
    stats.new_metadata, stats.new_regular, stats.new_symlinks = (len(plan.metadata), len(plan.regular),
                                                                 len(plan.symlinks))
    plan.metadata = [item for item in plan.metadata if item != (target, ObjectType.COMMIT)]  # in the superblock
    modified = similar_objects(repo, source, target, set(plan.regular), plan.infos) if source else {}
    stats.modified = len(modified)
    for new, old in modified.items():
        _choose_method(repo, plan, new, old, options, stats)
    fallback_bytes = options.min_fallback_size * MEGABYTE
    for checksum in plan.regular:
        if checksum in plan.rollsums or checksum in plan.bsdiffs:
            continue
        if fallback_bytes and plan.infos[checksum][1] > fallback_bytes:
            plan.fallbacks.append(checksum)
    stats.fallback = len(plan.fallbacks)
    return plan


def _choose_method(repo: Repo, plan: _Plan, new: str, old: str, options: DeltaOptions, stats: DeltaStats) -> None:
    old_meta, old_size = plan.infos.get(old) or content_info(repo, old)
    if not old_meta.mode & 0o004:
        return  # a client applying into a bare-user repo might not be able to read it
    matches = rollsum.compute_matches(repo.read_file(old)[1], repo.read_file(new)[1])
    if matches.match_ratio >= ROLLSUM_MIN_MATCH_PERCENT:
        plan.rollsums[new] = (old, matches)
        stats.rollsum += 1
        stats.rollsum_bytes += matches.match_size
        return
    if options.bsdiff and old_size + plan.infos[new][1] <= options.max_bsdiff_size * MEGABYTE:
        plan.bsdiffs[new] = old
        stats.bsdiff += 1


class _Parts:
    """The parts being filled, starting a new one when the current payload would pass the chunk size."""

    def __init__(self, max_chunk_size: int) -> None:
        self.limit = max_chunk_size * MEGABYTE
        self.done: list[_PartBuilder] = [_PartBuilder()]

    def for_object(self, size: int) -> _PartBuilder:
        current = self.done[-1]
        if current.count and len(current.payload) + size > self.limit:
            current = _PartBuilder()
            self.done.append(current)
        return current

    def for_diff(self) -> _PartBuilder:
        current = self.done[-1]
        if current.count and len(current.payload) > self.limit:
            current = _PartBuilder()
            self.done.append(current)
        return current


def _fill_parts(repo: Repo, plan: _Plan, options: DeltaOptions, stats: DeltaStats) -> list[_PartBuilder]:
    parts = _Parts(options.max_chunk_size)
    for checksum, objtype in plan.metadata:
        data = repo.read_metadata(checksum, objtype, verify=True)
        parts.for_object(len(data)).add_metadata(objtype, checksum, data)
        stats.loose_size += _storage_size(repo, checksum, objtype)
    for checksum, (old, matches) in plan.rollsums.items():
        meta, content = repo.read_file(checksum)
        parts.for_diff().add_rollsum(checksum, meta, content, old, matches)
        stats.loose_size += _storage_size(repo, checksum, ObjectType.FILE)
    for checksum, old in plan.bsdiffs.items():
        meta, content = repo.read_file(checksum)
        parts.for_diff().add_bsdiff(checksum, meta, repo.read_file(old)[1], content, old)
        stats.loose_size += _storage_size(repo, checksum, ObjectType.FILE)
    skipped = set(plan.rollsums) | set(plan.bsdiffs) | set(plan.fallbacks)
    for checksum in [c for c in plan.regular if c not in skipped] + plan.symlinks:
        meta, content = repo.read_file(checksum)
        size = plan.infos[checksum][1]
        parts.for_object(size).add_file(checksum, meta, content, size)
        stats.loose_size += _storage_size(repo, checksum, ObjectType.FILE)
    return parts.done


def _storage_size(repo: Repo, checksum: str, objtype: ObjectType) -> int:
    return os.lstat(repo.object_path(checksum, objtype)).st_size


# ---------------------------------------------------------------- the delta on disk


def generate(repo: Repo, source: str | None, target: str, options: DeltaOptions | None = None) -> DeltaStats:
    """Write the delta from source (None: from nothing) to target; returns what it did and where."""
    options = options or DeltaOptions()
    if options.endianness not in ("l", "B"):
        raise InvalidInputError(f"Invalid endianness '{options.endianness}'")
    for commit in (source, target):
        if commit is not None and not repo.has_object(commit, ObjectType.COMMIT):
            raise NotFoundError(f"No such metadata object {commit}.commit")
    stats = DeltaStats()
    plan = _plan(repo, source, target, options, stats)
    builders = _fill_parts(repo, plan, options, stats)
    parts = [builder.serialize(options.compress) for builder in builders]
    stats.parts = [PartSummary(b.count, len(data), b.unpacked) for b, data in zip(builders, parts, strict=True)]
    superblock = _superblock(repo, source, target, options, builders, parts, plan.fallbacks)
    stats.path = _store(repo, source, target, options, parts, superblock)
    return stats


def _superblock(repo: Repo, source: str | None, target: str, options: DeltaOptions, builders: list[_PartBuilder],
                parts: list[bytes], fallbacks: list[str]) -> bytes:
    size: Callable[[int], int] = swap64 if options.endianness == "l" else int
    metadata: list[tuple[str, Variant]] = [(ENDIANNESS_KEY, Variant("y", ord(options.endianness)))]
    relpath = delta_relpath(source, target)
    if options.inline:
        metadata += [(f"{relpath}/{index}", Variant("(yay)", (data[0], data[1:]))) for index, data in enumerate(parts)]
    detached = repo.read_detached_metadata(target)
    if detached is not None:
        metadata.append((f"{relpath}/commitmeta", Variant("a{sv}", gvariant.decode("a{sv}", detached, strict=False))))
    headers = [(0, hashlib.sha256(data).digest(), size(len(data)), size(builder.unpacked), bytes(builder.objects))
               for builder, data in zip(builders, parts, strict=True)]
    fallback_entries = []
    for checksum in fallbacks:
        _meta, unpacked = content_info(repo, checksum)
        stored = _storage_size(repo, checksum, ObjectType.FILE)
        fallback_entries.append((ObjectType.FILE.number, bytes.fromhex(checksum), size(stored), size(unpacked)))
    commit = gvariant.decode(O.COMMIT_TYPE, repo.read_metadata(target, ObjectType.COMMIT), strict=False)
    timestamp = repo.load_commit(target).timestamp
    body = gvariant.encode(SUPERBLOCK_TYPE, (metadata, timestamp, bytes.fromhex(source) if source else b"",
                                             bytes.fromhex(target), commit, b"", headers, fallback_entries))
    if options.signer is None:
        return body
    return gvariant.encode(SIGNED_TYPE, (SIGNED_MAGIC, body, options.signer(body)))


def _store(repo: Repo, source: str | None, target: str, options: DeltaOptions, parts: list[bytes],
           superblock: bytes) -> Path:
    """Parts then superblock; in the repository the delta directory appears whole, by rename."""
    part_files = [] if options.inline else parts
    if options.filename is not None:
        directory = options.filename.parent
        for index, data in enumerate(part_files):
            atomic_write(directory / str(index), data)
        atomic_write(options.filename, superblock)
        return options.filename
    final = delta_dir(repo.path, source, target)
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for index, data in enumerate(part_files):
        atomic_write(staging / str(index), data)
    atomic_write(staging / "superblock", superblock)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final / "superblock"
