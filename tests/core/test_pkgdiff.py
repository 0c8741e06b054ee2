"""rpm version comparison and package diff formats."""

from __future__ import annotations

import pytest

from strata.core.pkgdiff import aligned_lines, block_lines, diff_format_lines, diff_packages, summary_text
from strata.packages.nevra import Nevra, rpmvercmp


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("1.0", "1.0", 0), ("1.0", "1.1", -1), ("1.10", "1.9", 1), ("1.0~rc1", "1.0", -1), ("1.0^git1", "1.0", 1),
    ("1.0a", "1.0", 1), ("2.0", "2.0.1", -1), ("1.13.1", "1.13.1", 0), ("21", "22", -1), ("a", "1", -1),
    ("1.0^", "1.0~", 1), ("fc41", "fc40", 1),
])
def test_rpmvercmp(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


def test_nevra_parse_and_text() -> None:
    n = Nevra.parse("podman-5:5.3.1-1.fc41.x86_64")
    assert (n.name, n.epoch, n.version, n.release, n.arch) == ("podman", 5, "5.3.1", "1.fc41", "x86_64")
    assert n.nevra == "podman-5:5.3.1-1.fc41.x86_64"
    assert Nevra.parse("htop-3.2.2-1.x86_64").evr == "3.2.2-1"


def test_diff_and_formats() -> None:
    old = [Nevra.parse(t) for t in ("kernel-6.1.8-200.x86_64", "nano-7.2-1.x86_64", "strace-6.1-1.x86_64",
                                     "demo-1.0-2.x86_64")]
    new = [Nevra.parse(t) for t in ("kernel-6.2.0-1.x86_64", "nano-7.2-1.x86_64", "htop-3.2.2-1.x86_64",
                                     "demo-1.0-1.x86_64")]
    diff = diff_packages(old, new)
    assert block_lines(diff) == [
        "Upgraded:", "  kernel 6.1.8-200 -> 6.2.0-1",
        "Downgraded:", "  demo 1.0-2 -> 1.0-1",
        "Removed:", "  strace-6.1-1.x86_64",
        "Added:", "  htop-3.2.2-1.x86_64"]
    assert summary_text(diff) == "1 upgraded, 1 downgraded, 1 removed, 1 added"
    assert diff_format_lines(diff) == ["!demo-1.0-2.x86_64", "=demo-1.0-1.x86_64", "+htop-3.2.2-1.x86_64",
                                       "!kernel-6.1.8-200.x86_64", "=kernel-6.2.0-1.x86_64", "-strace-6.1-1.x86_64"]
    aligned = aligned_lines(diff)
    assert aligned[0] == "                 Upgraded: kernel 6.1.8-200 -> 6.2.0-1"
    assert aligned[-1] == "                    Added: htop-3.2.2-1.x86_64"


def test_empty_diff() -> None:
    same = [Nevra.parse("a-1-1.noarch")]
    assert diff_packages(same, same).empty
    assert summary_text(diff_packages(same, same)) == ""
