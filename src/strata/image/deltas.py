"""Static deltas (spec §17): the objects a commit adds over another (or over nothing) in a few files, so a
client fetches a handful of files instead of thousands. ostree's format: a superblock
`(a{sv}tayay(commit)aya(uayttay)a(yaytt))`, optionally wrapped in a signed `(taya{sv})`, and parts
`y` + `(a(uuu)aa(ayay)ayay)` holding a payload blob and a byte program that recreates objects.

This module names, lists, parses and executes deltas; `delta_compile` writes them. Everything read here may
come from a hostile mirror: every offset is checked against its buffer, every object made is checked against
its name, and a part inflates no further than its header allows.
"""

from __future__ import annotations

import base64
import hashlib
import lzma
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from strata.errors import CorruptionError, InvalidInputError, NotFoundError, StrataError
from strata.image import bsdiff, gvariant, varint
from strata.image import objects as O
from strata.image.gvariant import Variant
from strata.image.objects import ObjectType
from strata.image.repo import Repo

SUPERBLOCK_TYPE = "(a{sv}tayay" + O.COMMIT_TYPE + "aya(uayttay)a(yaytt))"
SIGNED_TYPE = "(taya{sv})"
SIGNED_MAGIC = int.from_bytes(b"OSTSGNDT", "big")
PART_TYPE = "(a(uuu)aa(ayay)ayay)"
ENDIANNESS_KEY = "ostree.endianness"
SIGN_PREFIX = "ostree.sign."

OP_OPEN_SPLICE_AND_CLOSE = ord("S")
OP_OPEN = ord("o")
OP_WRITE = ord("w")
OP_SET_READ_SOURCE = ord("r")
OP_UNSET_READ_SOURCE = ord("R")
OP_CLOSE = ord("c")
OP_BSPATCH = ord("B")
OPCODES = (OP_OPEN_SPLICE_AND_CLOSE, OP_OPEN, OP_WRITE, OP_SET_READ_SOURCE, OP_UNSET_READ_SOURCE, OP_CLOSE,
           OP_BSPATCH)

# A part's body is its payload plus mode/xattr/operation tables; a bsdiff patch may be a little larger than the
# object it makes, so a body may exceed the declared object bytes by this factor plus the allowance.
_BODY_FACTOR = 2
_TABLES_ALLOWANCE = 16 << 20


class UnsupportedDeltaError(StrataError):
    """The delta uses features strata does not execute; the caller fetches objects instead."""


# ---------------------------------------------------------------- names and places


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


def delta_name(source: str | None, target: str) -> str:
    return f"{source}-{target}" if source else target


def parse_delta_name(name: str) -> tuple[str | None, str]:
    """FROM-TO or TO as (source or None, target); anything else is refused as ostree refuses it."""
    first, dash, second = name.partition("-")
    if not O.is_checksum(first) or (dash and not O.is_checksum(second)):
        bad = first if not O.is_checksum(first) else second
        raise InvalidInputError(f"Invalid rev {bad}")
    return (first, second) if dash else (None, first)


def list_deltas(repo: Repo) -> list[tuple[str, bytes]]:
    """(FROM-TO or TO, sha256 of the superblock) for every delta in deltas/."""
    top = repo.path / "deltas"
    if not top.is_dir():
        return []
    found = []
    for prefix in sorted(top.iterdir()):
        if not prefix.is_dir():
            continue
        for rest in sorted(prefix.iterdir()):
            superblock = rest / "superblock"
            if not superblock.is_file():
                continue
            name = prefix.name + rest.name
            try:
                if "-" in name:
                    source, _, target = name.partition("-")
                    label = f"{from_mbase64(source)}-{from_mbase64(target)}"
                else:
                    label = from_mbase64(name)
            except ValueError:
                continue  # not a delta directory (a staging leftover or foreign file)
            found.append((label, hashlib.sha256(superblock.read_bytes()).digest()))
    return found


def list_indexes(repo: Repo) -> list[str]:
    """The target commits that have a delta index."""
    top = repo.path / "delta-indexes"
    suffix = ".index"
    names = sorted(p.parent.name + p.name[:-len(suffix)] for p in top.glob("*/*" + suffix)
                   if len(p.parent.name) == 2 and len(p.name) == 41 + len(suffix))
    return [from_mbase64(name) for name in names]


def generate(repo: Repo, source: str | None, target: str, *, compress: bool = True) -> Path:
    """Write the delta from source (None: from nothing) to target with ostree's defaults; returns its
    directory. (`delta_compile.generate` takes every option.)"""
    from strata.image.delta_compile import DeltaOptions
    from strata.image.delta_compile import generate as compile_delta
    return compile_delta(repo, source, target, DeltaOptions(compress=compress)).path.parent


# ---------------------------------------------------------------- superblocks


def swap64(value: int) -> int:
    """The other byte order of a 64-bit value. The codec reads and writes `t` big-endian; ostree writes a
    delta's sizes in the writer's order, little-endian on the machines that matter."""
    return int.from_bytes(value.to_bytes(8, "little"), "big")


@dataclass(frozen=True)
class DeltaPart:
    checksum: bytes  # sha256 of the part file
    size: int  # bytes of the part file
    unpacked_size: int  # bytes of the objects it makes
    objects: list[tuple[ObjectType, str]]
    version: int = 0


@dataclass(frozen=True)
class Fallback:
    objtype: ObjectType
    checksum: str
    size: int
    unpacked_size: int


@dataclass(frozen=True)
class Superblock:
    source: str | None
    target: str
    commit: bytes
    parts: list[DeltaPart]
    fallbacks: list[Fallback] = field(default_factory=list)
    metadata: list[tuple[str, Variant]] = field(default_factory=list)
    timestamp: int = 0
    endianness: str = "little"  # as `show` prints it
    prerequisites: int = 0
    signed_body: bytes | None = None  # the superblock bytes a signed delta's signatures cover
    signatures: list[tuple[str, Variant]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return delta_name(self.source, self.target)

    def inline_part(self, index: int) -> bytes | None:
        """A part carried in the superblock (`--inline`): the same bytes a part file would hold."""
        key = f"{delta_relpath(self.source, self.target)}/{index}"
        value = gvariant.vardict_lookup(self.metadata, key, "(yay)")
        return None if value is None else bytes([value[0]]) + value[1]

    def detached_commitmeta(self) -> bytes | None:
        key = f"{delta_relpath(self.source, self.target)}/commitmeta"
        value = gvariant.vardict_lookup(self.metadata, key, "a{sv}")
        return None if value is None else gvariant.encode("a{sv}", value)


def unwrap_signed(data: bytes) -> tuple[bytes, list[tuple[str, Variant]] | None]:
    """(superblock bytes, signature entries) of a signed superblock; (data, None) for an unsigned one."""
    if data[:8] != SIGNED_MAGIC.to_bytes(8, "big"):
        return data, None
    _magic, inner, entries = gvariant.decode(SIGNED_TYPE, data, strict=False)
    return inner, entries


def parse_superblock(data: bytes) -> Superblock:
    """A superblock (signed or not) from a server or a file: every field checked, so a hostile one fails as
    CorruptionError."""
    body, signatures = unwrap_signed(data)
    meta, timestamp, source, target, commit, prereq, raw_parts, raw_fallbacks = gvariant.decode(
        SUPERBLOCK_TYPE, body, strict=False)
    if (source and len(source) != 32) or len(target) != 32:
        raise CorruptionError("static delta superblock: invalid source or target checksum")
    endianness, swap = _endianness(meta, raw_parts)
    size: Callable[[int], int] = swap64 if swap else int
    parts = [_parse_part_header(version, checksum, size(psize), size(usize), objects)
             for version, checksum, psize, usize, objects in raw_parts]
    fallbacks = [_parse_fallback(objtype, checksum, size(fsize), size(usize))
                 for objtype, checksum, fsize, usize in raw_fallbacks]
    return Superblock(source.hex() if source else None, target.hex(), gvariant.encode(O.COMMIT_TYPE, commit),
                      parts, fallbacks, meta, timestamp, endianness, len(prereq) // 64,
                      body if signatures is not None else None, signatures or [])


def _endianness(meta: list[tuple[str, Variant]], raw_parts: list[tuple[int, bytes, int, int, bytes]]
                ) -> tuple[str, bool]:
    """How the writer ordered the size fields (ostree's rule, including its guess for old deltas without the
    `ostree.endianness` key) and whether the codec's big-endian reading must be swapped."""
    marker = gvariant.vardict_lookup(meta, ENDIANNESS_KEY, "y")
    if marker is not None:
        if marker == ord("B"):
            return "big", False
        return ("little", True) if marker == ord("l") else ("invalid", True)
    total_size = total_objects = 0
    for _version, _checksum, size, usize, objects in raw_parts:
        size, usize = swap64(size), swap64(usize)
        total_size += size
        total_objects += len(objects) // 33
        if size > usize and usize and size / usize > 1.2:
            return "big (heuristic)", False
    if total_objects and total_size // total_objects > 0xFFFFFFFF:
        return "big (heuristic)", False
    return "invalid", True


def _object_type(number: int) -> ObjectType:
    objtype = _TYPE_BY_NUMBER.get(number)
    if objtype is None:
        raise CorruptionError(f"static delta: unknown object type {number}")
    return objtype


def _parse_part_header(version: int, checksum: bytes, size: int, unpacked: int, objects: bytes) -> DeltaPart:
    if len(checksum) != 32 or len(objects) % 33:
        raise CorruptionError("static delta superblock: invalid part header")
    names = [(_object_type(objects[i]), objects[i + 1:i + 33].hex()) for i in range(0, len(objects), 33)]
    return DeltaPart(checksum, size, unpacked, names, version)


def _parse_fallback(objtype: int, checksum: bytes, size: int, unpacked: int) -> Fallback:
    if len(checksum) != 32:
        raise CorruptionError("static delta superblock: invalid fallback checksum")
    return Fallback(_object_type(objtype), checksum.hex(), size, unpacked)


def read_superblock(repo: Repo, name_or_path: str) -> tuple[Superblock, Path]:
    """A delta by name (FROM-TO or TO, in repo) or by the path of its superblock, and its directory."""
    if "/" in name_or_path:
        path = Path(name_or_path)
    else:
        source, target = parse_delta_name(name_or_path)
        path = delta_dir(repo.path, source, target) / "superblock"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"opening {path}: No such file or directory") from None
    return parse_superblock(data), path.parent


# ---------------------------------------------------------------- parts


def part_body(data: bytes, unpacked_size: int) -> tuple[list[tuple[int, int, int]], list[list[tuple[bytes, bytes]]],
                                                        bytes, bytes]:
    """The part's (modes, xattrs, payload, operations)."""
    modes, xattrs, payload, ops = gvariant.decode(PART_TYPE, _part_body(data, unpacked_size), strict=False)
    return modes, xattrs, payload, ops


def _part_body(data: bytes, unpacked_size: int) -> bytes:
    """The part's GVariant bytes; an xz body inflates no further than the header allows."""
    if data[:1] == b"\0":
        return data[1:]
    if data[:1] == b"x":
        return _inflate(data[1:], unpacked_size * _BODY_FACTOR + _TABLES_ALLOWANCE)
    raise CorruptionError(f"Invalid compression type '{data[0] if data else 0}'")


def _inflate(data: bytes, limit: int) -> bytes:
    decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        body = decomp.decompress(data, max_length=limit + 1)
    except lzma.LZMAError as exc:
        raise CorruptionError(f"corrupt static delta part: {exc}") from None
    if len(body) > limit or not decomp.eof:
        raise CorruptionError("static delta part does not inflate to its declared size")
    return body


def apply_part(repo: Repo, data: bytes, part: DeltaPart) -> int:
    """Execute one part: every object it makes is checked against its name as it is written."""
    if part.version != 0:
        raise UnsupportedDeltaError(f"Delta part has too new version {part.version}")
    executor = _Executor(repo, part_body(data, part.unpacked_size), part.objects, part.unpacked_size)
    try:
        return executor.run()
    except (IndexError, ValueError) as exc:
        raise CorruptionError(f"malformed static delta part: {exc}") from None


def count_operations(data: bytes, part: DeltaPart) -> dict[int, int]:
    """How often each opcode runs in a part (for `show`), walking the program without executing it."""
    _modes, _xattrs, _payload, ops = part_body(data, part.unpacked_size)
    counts = dict.fromkeys(OPCODES, 0)
    pos = index = 0
    while pos < len(ops):
        opcode = ops[pos]
        pos += 1
        if opcode not in counts:
            raise CorruptionError(f"Unknown opcode {opcode} at offset {sum(counts.values())}")
        counts[opcode] += 1
        if opcode == OP_OPEN_SPLICE_AND_CLOSE:
            if index >= len(part.objects):
                raise CorruptionError("static delta part makes more objects than it lists")
            arguments = 2 if part.objects[index][0].is_meta else 4
            index += 1
        else:
            arguments = _ARGUMENTS[opcode]
            index += opcode == OP_CLOSE
        for _ in range(arguments):
            _value, pos = varint.decode(ops, pos, "static delta")
    return counts


_ARGUMENTS = {OP_OPEN: 3, OP_WRITE: 2, OP_SET_READ_SOURCE: 1, OP_UNSET_READ_SOURCE: 0, OP_CLOSE: 0, OP_BSPATCH: 2}


@dataclass
class _Output:
    """The content object being written between OPEN and CLOSE."""

    checksum: str
    meta: O.FileMeta
    size: int
    data: bytearray | None  # None: the repository has it already, writes are skipped


class _Executor:
    """Runs a part's byte program (ostree's opcodes) against a repository."""

    def __init__(self, repo: Repo, body: tuple[list[tuple[int, int, int]], list[list[tuple[bytes, bytes]]], bytes,
                                               bytes], objects: list[tuple[ObjectType, str]],
                 unpacked_size: int) -> None:
        self.repo = repo
        # objects built by OPEN/WRITE may copy from old objects many times over, so what they may declare is
        # bounded by the bytes the part header declares for all its objects
        self.open_budget = unpacked_size
        self.modes, self.xattrs, self.payload, self.ops = body
        self.objects = objects
        self.index = 0
        self.pos = 0
        self.source: bytes | None = None
        self.output: _Output | None = None
        self.handlers: dict[int, Callable[[], None]] = {
            OP_OPEN_SPLICE_AND_CLOSE: self._splice, OP_OPEN: self._open, OP_WRITE: self._write,
            OP_SET_READ_SOURCE: self._set_source, OP_UNSET_READ_SOURCE: self._unset_source, OP_CLOSE: self._close,
            OP_BSPATCH: self._bspatch}

    def run(self) -> int:
        while self.pos < len(self.ops):
            opcode = self.ops[self.pos]
            self.pos += 1
            handler = self.handlers.get(opcode)
            if handler is None:
                raise CorruptionError(f"static delta: unknown opcode {opcode}")
            handler()
        if self.output is not None or self.index != len(self.objects):
            raise CorruptionError("static delta part ends before it has made every object it lists")
        return self.index

    def _varint(self) -> int:
        value, self.pos = varint.decode(self.ops, self.pos, "static delta")
        return value

    def _payload(self, offset: int, size: int) -> bytes:
        if offset + size > len(self.payload):
            raise CorruptionError(f"static delta: invalid offset/length {offset}/{size}")
        return self.payload[offset:offset + size]

    def _next_object(self) -> tuple[ObjectType, str]:
        if self.index >= len(self.objects):
            raise CorruptionError("static delta part makes more objects than it lists")
        return self.objects[self.index]

    def _file_meta(self, mode_index: int, xattr_index: int, target: str = "") -> O.FileMeta:
        uid, gid, mode = self.modes[mode_index]
        attrs = tuple((name[:-1] if name.endswith(b"\0") else name, value) for name, value in self.xattrs[xattr_index])
        return O.FileMeta(uid, gid, mode, target, attrs)

    def _splice(self) -> None:
        objtype, checksum = self._next_object()
        if objtype.is_meta:
            size = self._varint()
            data = self._payload(self._varint(), size)
            self.repo.write_metadata(objtype, data, expected=checksum)
        else:
            mode_index, xattr_index, size = self._varint(), self._varint(), self._varint()
            data = self._payload(self._varint(), size)
            meta = self._file_meta(mode_index, xattr_index)
            self._store(checksum, meta, data)
        self.index += 1
        self.source = None

    def _store(self, checksum: str, meta: O.FileMeta, data: bytes) -> None:
        if self.repo.has_object(checksum, ObjectType.FILE):
            return
        if stat.S_ISLNK(meta.mode):
            target = data.decode("utf-8", "surrogateescape")
            meta = O.FileMeta(meta.uid, meta.gid, meta.mode, target, meta.xattrs)
            data = b""
        self.repo.write_content(meta, data, expected=checksum)

    def _open(self) -> None:
        objtype, checksum = self._next_object()
        if objtype is not ObjectType.FILE or self.output is not None:
            raise CorruptionError("static delta: open of something other than a new content object")
        meta = self._file_meta(self._varint(), self._varint())
        size = self._varint()
        if size > self.open_budget:
            raise CorruptionError("static delta part makes more bytes than its header declares")
        self.open_budget -= size
        present = self.repo.has_object(checksum, ObjectType.FILE)
        self.output = _Output(checksum, meta, size, None if present else bytearray())

    def _append(self, data: bytes) -> None:
        assert self.output is not None and self.output.data is not None
        if len(self.output.data) + len(data) > self.output.size:
            raise CorruptionError(f"static delta writes more than the {self.output.size} bytes of its object")
        self.output.data += data

    def _write(self) -> None:
        size, offset = self._varint(), self._varint()
        if self.output is None:
            raise CorruptionError("static delta: write without an open object")
        if self.source is not None:
            if offset + size > len(self.source):
                raise CorruptionError("static delta: write reads past the end of its source object")
            data = self.source[offset:offset + size]
        else:
            data = self._payload(offset, size)
        if self.output.data is not None:
            self._append(data)

    def _set_source(self) -> None:
        checksum = self._payload(self._varint(), 32).hex()
        if not self.repo.has_object(checksum, ObjectType.FILE):
            raise StrataError(f"static delta reads object {checksum}, which the repository does not have")
        self.source = self.repo.read_file(checksum, verify=False)[1]

    def _unset_source(self) -> None:
        self.source = None

    def _close(self) -> None:
        output = self.output
        if output is None:
            raise CorruptionError("static delta: close without an open object")
        if output.data is not None:
            if len(output.data) != output.size:
                raise CorruptionError(f"static delta made {len(output.data)} of the {output.size} bytes of "
                                      f"{output.checksum}")
            self._store(output.checksum, output.meta, bytes(output.data))
        self.output = None
        self.source = None
        self.index += 1

    def _bspatch(self) -> None:
        offset, length = self._varint(), self._varint()
        patch = self._payload(offset, length)
        if self.output is None or self.source is None:
            raise CorruptionError("static delta: bspatch without an open object and a read source")
        if self.output.data is not None:
            self._append(bsdiff.patch(self.source, patch, self.output.size - len(self.output.data)))


# ---------------------------------------------------------------- offline application


def apply_offline(repo: Repo, path: Path, check_signature: Callable[[Superblock], None] | None = None) -> str:
    """Apply a delta found on disk (its directory or its superblock file); returns the target commit.

    check_signature, when given, is called with the parsed superblock before anything is written."""
    superblock_path = path / "superblock" if path.is_dir() else path
    try:
        data = superblock_path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"openat({superblock_path.name}): No such file or directory") from None
    parsed = parse_superblock(data)
    if check_signature is not None:
        check_signature(parsed)
    if parsed.source and not repo.has_object(parsed.source, ObjectType.COMMIT):
        raise StrataError(f"Commit {parsed.source}, which is the delta source, is not in repository")
    if hashlib.sha256(parsed.commit).hexdigest() != parsed.target:
        raise CorruptionError(f"static delta {parsed.name}: the commit in it is not {parsed.target}")
    if parsed.fallbacks:
        raise StrataError("Cannot execute delta offline: contains nonempty http fallback entries")
    with repo.lock():
        if not repo.has_object(parsed.target, ObjectType.COMMIT):
            repo.mark_partial(parsed.target)
            detached = parsed.detached_commitmeta()
            if detached is not None:
                repo.write_detached_metadata(parsed.target, detached)
            repo.write_metadata(ObjectType.COMMIT, parsed.commit, expected=parsed.target)
        for index, part in enumerate(parsed.parts):
            if all(repo.has_object(checksum, objtype) for objtype, checksum in part.objects):
                continue
            try:
                apply_part(repo, _offline_part(parsed, superblock_path.parent, index, part), part)
            except StrataError as exc:
                exc.args = (f"Executing delta part {index}: {exc}",)
                raise
        repo.sync()
        repo.clear_partial(parsed.target)
    return parsed.target


def advertised_to(source: Repo, target: str) -> dict[str, bytes]:
    """The deltas leading to target that a repository advertises, found as a pull finds them: its delta index
    when the summary says deltas are indexed, else the summary's own list (name -> superblock digest)."""
    from strata.image.summary import advertised_deltas, parse_summary
    try:
        summary = (source.path / "summary").read_bytes()
    except FileNotFoundError:
        return {}
    if parse_summary(summary)[1].get("ostree.summary.indexed-deltas"):
        encoded = to_mbase64(target)
        try:
            index = (source.path / "delta-indexes" / encoded[:2] / f"{encoded[2:]}.index").read_bytes()
        except FileNotFoundError:
            return {}
        entries = gvariant.vardict_lookup(gvariant.decode("a{sv}", index, strict=False), "ostree.static-deltas",
                                          "a{sv}", [])
        return {name: bytes(digest.value) for name, digest in entries if digest.type == "ay"}
    return {name: digest for name, digest in advertised_deltas(summary).items() if name.endswith(target)}


def apply_local(repo: Repo, source: Repo, target: str) -> str:
    """`pull-local --require-static-deltas`: apply the source repository's delta to target from a commit repo
    has (or from scratch); returns the delta's name. No such delta is an error, as in ostree."""
    offered = advertised_to(source, target)
    usable = [name for name in offered if "-" in name
              and repo.has_object(name.partition("-")[0], ObjectType.COMMIT)
              and not repo.is_partial(name.partition("-")[0])]
    if not usable and target in offered:
        usable = [target]
    if not usable:
        raise NotFoundError(f"Static deltas required, but none found for {target}")
    name = usable[0]
    source_commit, target_commit = parse_delta_name(name)
    directory = delta_dir(source.path, source_commit, target_commit)
    if hashlib.sha256((directory / "superblock").read_bytes()).digest() != offered[name]:
        raise CorruptionError(f"static delta {name}: superblock does not match its index")
    apply_offline(repo, directory)
    return name


def _offline_part(parsed: Superblock, directory: Path, index: int, part: DeltaPart) -> bytes:
    inline = parsed.inline_part(index)
    if inline is not None:
        return inline  # covered by the superblock, as in ostree: no part checksum to check
    try:
        data = (directory / str(index)).read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"Opening deltapart '{index}': No such file or directory") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != part.checksum.hex():
        raise CorruptionError(f"Checksum mismatch in static delta part; expected={part.checksum.hex()} "
                              f"actual={actual}")
    return data


def read_part(parsed: Superblock, directory: Path, index: int) -> bytes:
    """A part's bytes from the delta's directory or the superblock (for `show`), not checked."""
    inline = parsed.inline_part(index)
    if inline is not None:
        return inline
    path = directory / str(index)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"openat({delta_relpath(parsed.source, parsed.target)}/{index}): "
                            "No such file or directory") from None


_TYPE_BY_NUMBER = {t.number: t for t in ObjectType}
