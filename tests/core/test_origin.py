"""Origin files keep rpm-ostree's keys and round-trip."""

from __future__ import annotations

import pytest

from strata.core.origin import LocalPackage, Origin
from strata.errors import InvalidInputError

SHA = "4ed748ba" + "0" * 56


def test_plain_origin_uses_refspec() -> None:
    origin = Origin("lab:lab/x86_64/base")
    assert origin.serialize() == "[origin]\nrefspec=lab:lab/x86_64/base\n"


def test_layered_origin_uses_baserefspec_and_lists() -> None:
    origin = Origin("lab:lab/x86_64/base", requested=("htop", "nano"), override_remove=("strace",),
                    requested_local=(LocalPackage(SHA, "foo-1.2-3.x86_64"),), pinned=True)
    text = origin.serialize()
    assert "[origin]\nbaserefspec=lab:lab/x86_64/base\n" in text
    assert "[packages]\nrequested=htop;nano;\nrequested-local=" + SHA + ":foo-1.2-3.x86_64;\n" in text
    assert "[overrides]\nremove=strace;\n" in text
    assert text.endswith("[libostree-transient]\npinned=true\n")
    assert Origin.parse(text) == origin


def test_unknown_keys_are_kept() -> None:
    text = "[origin]\nrefspec=x\ncustom-url=https://example.invalid\n[rpmostree]\nex-cliwrap=true\n"
    origin = Origin.parse(text)
    assert origin.extra == {"origin": {"custom-url": "https://example.invalid"}, "rpmostree": {"ex-cliwrap": "true"}}
    assert "custom-url=https://example.invalid" in origin.serialize()


def test_origin_without_ref_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        Origin.parse("[packages]\nrequested=a;\n")
