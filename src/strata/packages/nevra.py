"""Package identities (NEVRA) and rpm's version comparison."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_SEGMENT = re.compile(r"(\d+|[a-zA-Z]+|~|\^)")


def rpmvercmp(a: str, b: str) -> int:
    """Compare two version or release strings the way rpm does: -1, 0 or 1."""
    if a == b:
        return 0
    segs_a = _segments(a)
    segs_b = _segments(b)
    while segs_a or segs_b:
        x = segs_a.pop(0) if segs_a else None
        y = segs_b.pop(0) if segs_b else None
        if x == "~" or y == "~":
            if x != y:
                return -1 if x == "~" else 1
            continue
        if x == "^" or y == "^":
            if x is None:
                return -1
            if y is None:
                return 1
            if x != y:
                return -1 if x == "^" else 1
            continue
        if x is None:
            return -1
        if y is None:
            return 1
        result = _compare_segment(x, y)
        if result:
            return result
    return 0


def _segments(text: str) -> list[str]:
    return _SEGMENT.findall(text)


def _compare_segment(x: str, y: str) -> int:
    x_num, y_num = x.isdigit(), y.isdigit()
    if x_num and not y_num:
        return 1
    if y_num and not x_num:
        return -1
    if x_num:
        xi, yi = int(x), int(y)
        return (xi > yi) - (xi < yi)
    return (x > y) - (x < y)


@total_ordering
@dataclass(frozen=True)
class Nevra:
    name: str
    epoch: int
    version: str
    release: str
    arch: str

    @property
    def evr(self) -> str:
        return f"{self.epoch}:{self.version}-{self.release}" if self.epoch else f"{self.version}-{self.release}"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"

    def __str__(self) -> str:
        return self.nevra

    def compare_evr(self, other: Nevra) -> int:
        if self.epoch != other.epoch:
            return -1 if self.epoch < other.epoch else 1
        return rpmvercmp(self.version, other.version) or rpmvercmp(self.release, other.release)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Nevra):
            return NotImplemented
        return (self.name, self.arch) < (other.name, other.arch) or (
            (self.name, self.arch) == (other.name, other.arch) and self.compare_evr(other) < 0)

    def pkglist_entry(self) -> tuple[str, str, str, str, str]:
        """The (name, epoch, version, release, arch) tuple of rpmostree.rpmdb.pkglist."""
        return (self.name, str(self.epoch), self.version, self.release, self.arch)

    @classmethod
    def from_pkglist_entry(cls, entry: tuple[str, str, str, str, str]) -> Nevra:
        name, epoch, version, release, arch = entry
        return cls(name, int(epoch or 0), version, release, arch)

    @classmethod
    def parse(cls, text: str) -> Nevra:
        """Parse NAME-[EPOCH:]VERSION-RELEASE.ARCH."""
        head, dot, arch = text.rpartition(".")
        rest, dash, release = head.rpartition("-")
        name, dash2, version = rest.rpartition("-")
        if not (dot and dash and dash2 and name):
            raise ValueError(f"not a NEVRA: {text}")
        epoch = 0
        if ":" in version:
            epoch_text, _, version = version.partition(":")
            epoch = int(epoch_text)
        return cls(name, epoch, version, release, arch)
