"""Package differences between two trees and the ways rpm-ostree prints them (spec C.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strata.packages.nevra import Nevra

KEY_WIDTH = 23  # status key column (length of "InactiveRemoteOverrides")


@dataclass
class PackageDiff:
    upgraded: list[tuple[Nevra, Nevra]] = field(default_factory=list)
    downgraded: list[tuple[Nevra, Nevra]] = field(default_factory=list)
    removed: list[Nevra] = field(default_factory=list)
    added: list[Nevra] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.upgraded or self.downgraded or self.removed or self.added)


def diff_packages(old: list[Nevra], new: list[Nevra]) -> PackageDiff:
    old_by_key = {(p.name, p.arch): p for p in old}
    new_by_key = {(p.name, p.arch): p for p in new}
    # a package that changed arch (noarch <-> x86_64) is still the same package by name
    old_by_name = {p.name: p for p in old}
    result = PackageDiff()
    matched_old: set[Nevra] = set()
    for key, pkg in sorted(new_by_key.items()):
        before = old_by_key.get(key)
        if before is None and pkg.name in old_by_name and (pkg.name, old_by_name[pkg.name].arch) not in new_by_key:
            before = old_by_name[pkg.name]
        if before is None:
            result.added.append(pkg)
            continue
        matched_old.add(before)
        order = pkg.compare_evr(before)
        if order > 0:
            result.upgraded.append((before, pkg))
        elif order < 0:
            result.downgraded.append((before, pkg))
    result.removed = sorted(p for p in old if p not in matched_old and (p.name, p.arch) not in new_by_key)
    return result


def block_lines(diff: PackageDiff) -> list[str]:
    lines: list[str] = []
    for title, pairs in (("Upgraded", diff.upgraded), ("Downgraded", diff.downgraded)):
        if pairs:
            lines.append(f"{title}:")
            lines += [f"  {new.name} {old.evr} -> {new.evr}" for old, new in pairs]
    for title, pkgs in (("Removed", diff.removed), ("Added", diff.added)):
        if pkgs:
            lines.append(f"{title}:")
            lines += [f"  {p.nevra}" for p in pkgs]
    return lines


def aligned_lines(diff: PackageDiff, width: int = KEY_WIDTH) -> list[str]:
    lines: list[str] = []
    sections: list[tuple[str, list[str]]] = [
        ("Upgraded", [f"{n.name} {o.evr} -> {n.evr}" for o, n in diff.upgraded]),
        ("Downgraded", [f"{n.name} {o.evr} -> {n.evr}" for o, n in diff.downgraded]),
        ("Removed", [p.nevra for p in diff.removed]),
        ("Added", [p.nevra for p in diff.added]),
    ]
    for title, items in sections:
        for i, item in enumerate(items):
            key = f"{title}:" if i == 0 else ""
            lines.append(f"  {key:>{width + 1}} {item}" if key else f"  {'':>{width}}  {item}")
    return lines


def summary_text(diff: PackageDiff) -> str:
    parts = [f"{len(items)} {word}" for word, items in (
        ("upgraded", diff.upgraded), ("downgraded", diff.downgraded), ("removed", diff.removed),
        ("added", diff.added)) if items]
    return ", ".join(parts)


def diff_format_lines(diff: PackageDiff) -> list[str]:
    """`db diff --format=diff`: one line per package sorted by name."""
    entries: list[tuple[str, list[str]]] = []
    entries += [(p.name, [f"+{p.nevra}"]) for p in diff.added]
    entries += [(p.name, [f"-{p.nevra}"]) for p in diff.removed]
    entries += [(n.name, [f"!{o.nevra}", f"={n.nevra}"]) for o, n in diff.upgraded + diff.downgraded]
    return [line for _, lines in sorted(entries, key=lambda e: e[0]) for line in lines]


def json_items(diff: PackageDiff) -> list[list[Any]]:
    def triple(p: Nevra) -> list[str]:
        return [p.name, p.evr, p.arch]
    items: list[list[Any]] = []
    items += [[p.name, 0, {"NewPackage": triple(p)}] for p in diff.added]
    items += [[p.name, 1, {"PreviousPackage": triple(p)}] for p in diff.removed]
    items += [[n.name, 2, {"PreviousPackage": triple(o), "NewPackage": triple(n)}] for o, n in diff.upgraded]
    items += [[n.name, 3, {"PreviousPackage": triple(o), "NewPackage": triple(n)}] for o, n in diff.downgraded]
    return sorted(items, key=lambda item: (item[1], item[0]))
