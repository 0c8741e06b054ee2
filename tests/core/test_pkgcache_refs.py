"""Package cache ref names are exactly rpm-ostree's, and reversible."""

from __future__ import annotations

import pytest

from strata.packages.pkgcache import escape_ref_component, package_ref, unescape_ref_component


@pytest.mark.parametrize(("nevra", "ref"), [
    (("foo", None, "1.0", "1", "x86_64"), "rpmostree/pkg/foo/1.0-1.x86__64"),
    (("git", 0, "1.8.3.1", "6.el7_2.1", "x86_64"), "rpmostree/pkg/git/1.8.3.1-6.el7__2.1.x86__64"),
    (("perl", 4, "5.16.3", "291.el7", "x86_64"), "rpmostree/pkg/perl/4_3A5.16.3-291.el7.x86__64"),
])
def test_package_refs(nevra: tuple[str, int | None, str, str, str], ref: str) -> None:
    assert package_ref(*nevra) == ref


@pytest.mark.parametrize("text", ["a_b", "4:5.1-2", "x+y~z", "ünï"])
def test_escape_roundtrip(text: str) -> None:
    assert unescape_ref_component(escape_ref_component(text)) == text
