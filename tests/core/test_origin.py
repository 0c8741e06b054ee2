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
    text = "[origin]\nrefspec=x\nfuture-key=1\n[rpmostree]\nex-cliwrap=true\n"
    origin = Origin.parse(text)
    assert origin.extra == {"origin": {"future-key": "1"}, "rpmostree": {"ex-cliwrap": "true"}}
    assert "future-key=1" in origin.serialize()


def test_custom_origin_and_repo_replacements_round_trip() -> None:
    text = ("[origin]\nbaserefspec=x\ncustom-url=https://example.invalid\ncustom-description=Mine\n"
            "[overrides]\nreplace=repo=updates,demo-engine,demo-engine-common;\n")
    origin = Origin.parse(text)
    assert (origin.custom_url, origin.custom_description) == ("https://example.invalid", "Mine")
    assert [(r.repo, r.packages) for r in origin.override_replace_remote] == [
        ("updates", ("demo-engine", "demo-engine-common"))]
    assert origin.needs_local_assembly and Origin.parse(origin.serialize()) == origin
    with pytest.raises(InvalidInputError, match="Invalid repo replacement"):
        Origin.parse("[origin]\nrefspec=x\n[overrides]\nreplace=rpm=foo,bar;\n")


def test_origin_without_ref_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        Origin.parse("[packages]\nrequested=a;\n")
