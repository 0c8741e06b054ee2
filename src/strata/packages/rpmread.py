"""Reading RPM files through rpm-rs (PyPI `rpm-rs`): identity, file list, scriptlets, streamed payload."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import rpm_rs

from strata.errors import CorruptionError, StrataError
from strata.packages.nevra import Nevra
from strata.packages.paths import normalize_payload_path
from strata.packages.rpmformat import RpmLayout, read_chunks, read_layout, verify_digests
from strata.packages.scripts import Scriptlet
from strata.packages.text import shown

_TRIGGER_IN = 1 << 16  # RPMSENSE_TRIGGERIN
_TYPE_MASK = 0o170000
_DOC_FLAGS = int(rpm_rs.FileFlags.DOC) | int(rpm_rs.FileFlags.LICENSE) | int(rpm_rs.FileFlags.README)
_SCRIPT_GETTERS = {"pre": "pre_install_script", "post": "post_install_script", "posttrans": "post_trans_script",
                   "pretrans": "pre_trans_script", "preun": "pre_uninstall_script",
                   "postun": "post_uninstall_script"}


@dataclass(frozen=True)
class RpmFile:
    """One entry of the package's file list (from the header)."""

    path: str
    mode: int
    user: str
    group: str
    flags: int
    linkto: str
    size: int
    caps: bytes | None

    @property
    def is_doc(self) -> bool:
        return bool(self.flags & _DOC_FLAGS)

    @property
    def is_config(self) -> bool:
        return bool(self.flags & int(rpm_rs.FileFlags.CONFIG))

    @property
    def is_ghost(self) -> bool:
        return bool(self.flags & int(rpm_rs.FileFlags.GHOST))


@dataclass(frozen=True)
class PayloadItem:
    path: str
    mode: int
    data: bytes
    link_target: str
    user: str
    group: str


class RpmHeader:
    """The metadata of a package: from an .rpm file or from the header bytes the package cache keeps."""

    def __init__(self, raw: bytes, metadata: Any) -> None:
        self.raw = raw  # lead + signature header + main header
        self._md = metadata

    @classmethod
    def from_bytes(cls, raw: bytes) -> RpmHeader:
        """A header kept by the package cache; its structure is checked before rpm-rs reads it."""
        try:
            read_layout(io.BytesIO(raw))
        except CorruptionError as exc:
            raise CorruptionError(f"cannot parse RPM header: {exc}") from None
        return cls(raw, _parse_metadata(raw, "RPM header"))

    def _get(self, attr: str) -> Any:
        """rpm-rs exposes some fields as properties and others as methods; a missing tag raises."""
        value = getattr(self._md, attr)
        return value() if callable(value) else value

    @cached_property
    def nevra(self) -> Nevra:
        try:
            return Nevra(self._get("name"), self._epoch(), self._get("version"), self._get("release"),
                         self._get("arch"))
        except BaseException as exc:
            _reraise_unless_rpm_rs_failure(exc)
            raise CorruptionError(f"RPM header without a readable name, version or arch ({_reason(exc)})") from None

    def _epoch(self) -> int:
        try:
            return int(self._get("epoch") or 0)
        except RuntimeError:  # no EPOCH tag
            return 0

    @property
    def buildtime(self) -> int:
        return int(self._get("build_time"))

    @cached_property
    def files(self) -> list[RpmFile]:
        try:
            entries = self._get("file_entries")
        except BaseException as exc:
            _reraise_unless_rpm_rs_failure(exc)
            raise CorruptionError(f"unreadable file list in the RPM header ({_reason(exc)})") from None
        return [RpmFile(entry.path, int(entry.mode.raw_mode), entry.user or "root", entry.group or "root",
                        int(entry.flags), entry.linkto or "", int(entry.size or 0),
                        parse_capabilities(entry.caps) if entry.caps else None) for entry in entries]

    def is_doc(self, path: str) -> bool:
        return path in self._doc_paths

    @cached_property
    def _doc_paths(self) -> frozenset[str]:
        return frozenset(f.path for f in self.files if f.is_doc)

    def scriptlets(self, kind: str) -> list[Scriptlet]:
        try:
            script = self._get(_SCRIPT_GETTERS[kind])
        except RuntimeError:
            return []
        if script is None or not script.script:
            return []
        program = tuple(script.program) if script.program else ("/bin/sh",)
        return [Scriptlet(self.nevra.name, kind, program, script.script)]

    def transfiletriggers_in(self) -> list[tuple[tuple[str, ...], Scriptlet]]:
        """%transfiletriggerin scripts with the path prefixes that fire them."""
        try:
            triggers = self._get("trans_file_triggers")
        except RuntimeError:
            return []
        result = []
        for trigger in triggers or []:
            patterns = tuple(c.name for c in trigger.conditions if int(c.flags) & _TRIGGER_IN)
            if patterns and trigger.script:
                program = tuple(trigger.program) if trigger.program else ("/bin/sh",)
                result.append((patterns, Scriptlet(self.nevra.name, "transfiletriggerin", program, trigger.script)))
        return result

    def dependencies(self, kind: str) -> list[tuple[str, int, str]]:
        """(name, flags, version) of requires/provides/conflicts/obsoletes/recommends."""
        try:
            deps = self._get(kind)
        except RuntimeError:
            return []
        return [(d.name, int(d.flags), d.version or "") for d in deps]


class RpmPackage(RpmHeader):
    """An .rpm file on disk: its header plus a streamed payload."""

    def __init__(self, path: Path, raw: bytes, metadata: Any) -> None:
        super().__init__(raw, metadata)
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RpmPackage:
        """Open a package whose structure and digests are verified before anything else reads it."""
        source = Path(path)
        try:
            with open(source, "rb") as f:
                layout = _checked_layout(f, source.name)
                try:
                    verify_digests(layout, read_chunks(f))
                except CorruptionError as exc:
                    raise CorruptionError(f"package {source.name}: {exc}") from None
        except FileNotFoundError:
            raise StrataError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise StrataError(f"{source}: is a directory") from None
        raw = layout.header_bytes
        return cls(source, raw, _parse_metadata(raw, source.name))

    @property
    def header_bytes(self) -> bytes:
        return self.raw

    def payload(self) -> Iterator[PayloadItem]:
        """The payload's members; each must be in the header's file list with the size declared there."""
        declared = {f.path: f for f in self.files}
        try:
            for entry in rpm_rs.PackageReader.open(str(self.path)):
                yield _payload_item(entry, declared)
        except StrataError:
            raise
        except BaseException as exc:
            _reraise_unless_rpm_rs_failure(exc)
            raise CorruptionError(f"corrupt payload ({_reason(exc)})") from None


def _payload_item(entry: Any, declared: dict[str, RpmFile]) -> PayloadItem:
    path = entry.metadata.path
    normalize_payload_path(path)
    header_file = declared.get(path)
    if header_file is None:
        raise CorruptionError(f"payload file is not in the header's file list: {shown(path)}")
    mode = header_file.mode  # the header's metadata is what the digests and the signature cover
    content = bytes(entry.content) if entry.content is not None else b""
    # Hard links carry their data once, in the last entry of the set: the others are empty.
    if _is_regular(mode) and len(content) not in (0, header_file.size):
        raise CorruptionError(f"payload file size differs from the header's: {shown(path)}")
    target = content.decode("utf-8", "surrogateescape") if _is_symlink(mode) else ""
    return PayloadItem(path, mode, b"" if target else content, target, header_file.user, header_file.group)


def _checked_layout(f: BinaryIO, name: str) -> RpmLayout:
    try:
        return read_layout(f)
    except CorruptionError as exc:
        raise CorruptionError(f"{name}: not an RPM package ({exc})") from None


def _parse_metadata(raw: bytes, name: str) -> Any:
    try:
        return rpm_rs.PackageMetadata.from_bytes(raw)
    except BaseException as exc:
        _reraise_unless_rpm_rs_failure(exc)
        raise CorruptionError(f"{name}: not an RPM package ({_reason(exc)})") from None


def _reraise_unless_rpm_rs_failure(exc: BaseException) -> None:
    """rpm-rs raises RuntimeError for malformed input, and a Rust panic surfaces as PanicException, which
    derives from BaseException; anything else (KeyboardInterrupt, SystemExit) is not ours to swallow."""
    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
        raise exc


def _reason(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return shown(lines[0] if lines else type(exc).__name__)


def _is_symlink(mode: int) -> bool:
    return (mode & _TYPE_MASK) == 0o120000


def _is_regular(mode: int) -> bool:
    return (mode & _TYPE_MASK) == 0o100000


_CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore")


def parse_capabilities(text: str) -> bytes:
    """A file capability text (`cap_net_raw=ep`, `cap_a,cap_b+ep`) as a VFS_CAP_REVISION_2 xattr value."""
    permitted = inheritable = 0
    effective = False
    for clause in text.replace("=", "=\0").split():
        names, op, flags = _split_clause(clause.replace("\0", ""))
        bits = 0
        for name in names.split(","):
            if not name:
                continue
            key = name.lower().removeprefix("cap_")
            if key == "all":
                bits |= (1 << len(_CAP_NAMES)) - 1
            elif key in _CAP_NAMES:
                bits |= 1 << _CAP_NAMES.index(key)
            else:
                raise CorruptionError(f"unknown capability {name}")
        if op in ("=", "+"):
            permitted = permitted | bits if "p" in flags else permitted
            inheritable = inheritable | bits if "i" in flags else inheritable
            effective = effective or "e" in flags
        elif op == "-":
            permitted &= ~bits if "p" in flags else permitted
            inheritable &= ~bits if "i" in flags else inheritable
    magic = 0x02000000 | (1 if effective else 0)
    words = (magic, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF, permitted >> 32, inheritable >> 32)
    return b"".join(w.to_bytes(4, "little") for w in words)


def _split_clause(clause: str) -> tuple[str, str, str]:
    for index, char in enumerate(clause):
        if char in "=+-":
            return clause[:index], char, clause[index + 1:]
    return clause, "=", "ep"
