"""Boot Loader Specification entries as ostree writes them (spec §20.3), and kernel argument editing."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from strata.errors import StrataError

_KEY_ORDER = ("title", "version", "options", "devicetree", "linux", "initrd")


@dataclass
class BlsEntry:
    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return None

    def serialize(self) -> str:
        ordered = sorted(self.fields, key=lambda kv: _KEY_ORDER.index(kv[0]) if kv[0] in _KEY_ORDER else 99)
        return "".join(f"{k} {v}\n" for k, v in ordered)

    @classmethod
    def parse(cls, text: str) -> BlsEntry:
        entry = cls()
        for line in text.splitlines():
            if not line[:1].isalpha():
                continue
            match = re.match(r"(\S+)[ \t]*(.*)", line)
            if match:
                entry.fields.append((match.group(1), match.group(2).strip()))
        return entry

    @classmethod
    def load(cls, path: Path) -> BlsEntry:
        return cls.parse(path.read_text())


def _strverscmp_key(text: str) -> list[tuple[int, object]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]


def sort_entries(entries: list[BlsEntry]) -> list[BlsEntry]:
    """The order a BLS boot loader shows them: by `version`, highest first."""
    def compare(a: BlsEntry, b: BlsEntry) -> int:
        ka, kb = _strverscmp_key(a.get("version") or ""), _strverscmp_key(b.get("version") or "")
        return (ka < kb) - (ka > kb)
    return sorted(entries, key=functools.cmp_to_key(compare))


# ---------------------------------------------------------------- kernel arguments


def split_kargs(text: str) -> list[str]:
    return text.split()


def karg_key(arg: str) -> str:
    return arg.split("=", 1)[0]


def replace_karg(args: list[str], new: str) -> list[str]:
    """Replace every argument with new's key by new (first position kept); append when absent."""
    key = karg_key(new)
    result: list[str] = []
    placed = False
    for arg in args:
        if karg_key(arg) == key:
            if not placed:
                result.append(new)
                placed = True
        else:
            result.append(arg)
    if not placed:
        result.append(new)
    return result


def delete_karg(args: list[str], spec: str) -> list[str]:
    """Delete KEY (every value) or exactly KEY=VALUE."""
    if "=" in spec:
        return [a for a in args if a != spec]
    return [a for a in args if karg_key(a) != spec]


def with_ostree_karg(args: list[str], value: str) -> list[str]:
    """Set ostree= in place (or append), as ostree does when writing an entry."""
    return replace_karg(args, f"ostree={value}")


def without_ostree_karg(args: list[str]) -> list[str]:
    return [a for a in args if karg_key(a) != "ostree"]


# ---------------------------------------------------------------- overlay initrds

OVERLAY_INITRDS_DIR = "ostree/initramfs-overlays"  # under the /boot filesystem, named SHA256.img
_OVERLAY_NAME = re.compile(r"^[0-9a-f]{64}$")


def overlay_initrd_path(checksum: str) -> str:
    """The `initrd` value of an overlay initrd, relative to the root of /boot."""
    if not _OVERLAY_NAME.match(checksum):
        raise StrataError(f"malformed overlay initrd checksum: {checksum!r}")
    return f"/{OVERLAY_INITRDS_DIR}/{checksum}.img"


def overlay_initrds(entry: BlsEntry) -> list[str]:
    """The checksums of the overlay initrds an entry lists, in its order (after the kernel's initramfs)."""
    found = []
    for value in (value for key, value in entry.fields if key == "initrd"):
        directory, _, name = value.rpartition("/")
        checksum = name.removesuffix(".img")
        if directory.endswith(f"/{OVERLAY_INITRDS_DIR}") and name.endswith(".img") and _OVERLAY_NAME.match(checksum):
            found.append(checksum)
    return found


def with_overlay_initrds(entry: BlsEntry, checksums: list[str]) -> BlsEntry:
    """The entry with one extra `initrd` line per overlay initrd, after the kernel's own initramfs."""
    return BlsEntry([*entry.fields, *(("initrd", overlay_initrd_path(c)) for c in checksums)])
