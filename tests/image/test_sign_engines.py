"""image/sign: a remote's verifiers from its configuration, and verification of untrusted detached
metadata with real ed25519 keys (PyNaCl): what is accepted, what is refused, and in which words."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.image import sign
from strata.image.sign import SignatureError, Verifier, verifiers_from_config

DATA = b"the exact bytes of a commit object"


def options(**values: str) -> sign.KeyOption:
    return lambda key: values.get(key.replace("-", "_"))


def test_sign_verify_values() -> None:
    assert verifiers_from_config(None, options()) == ()
    assert verifiers_from_config("false", options()) == verifiers_from_config("0", options()) == ()
    assert [v.engine for v in verifiers_from_config("true", options())] == ["ed25519", "dummy"]
    listed = verifiers_from_config("dummy;ed25519;", options(verification_dummy_key="k",
                                                              verification_ed25519_key=sign.generate_keypair()[1]))
    assert [v.engine for v in listed] == ["dummy", "ed25519"]
    assert listed[0].keys == (b"k",)
    with pytest.raises(SignatureError, match="No keys found for required signapi type ed25519"):
        verifiers_from_config("ed25519", options())
    with pytest.raises(StrataError, match="Requested signature type is not implemented: yes"):
        verifiers_from_config("yes", options())


def test_broken_key_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="Failed loading 'ed25519' keys from inline"):
        verifiers_from_config("true", options(verification_ed25519_key="c2hvcnQ="))
    empty = tmp_path / "empty"
    empty.write_text("not a key\n\n")
    with pytest.raises(SignatureError, match="no valid keys in file"):
        verifiers_from_config("true", options(verification_ed25519_file=str(empty)))
    with pytest.raises(SignatureError, match="is not a regular file"):
        verifiers_from_config("true", options(verification_ed25519_file=str(tmp_path)))


def signed(secret: str, detached: bytes | None = None) -> bytes:
    return sign.add_signature(detached, sign.sign(DATA, sign.load_secret(secret)))


def test_one_good_signature_among_several_is_enough() -> None:
    good_secret, good_public = sign.generate_keypair()
    other_secret, _other_public = sign.generate_keypair()
    detached = signed(good_secret, signed(other_secret))
    verifier = Verifier("ed25519", (sign.parse_public(good_public),))
    assert sign.verify(DATA, detached, [verifier], "commit c").startswith("ed25519: Signature verified")
    with pytest.raises(SignatureError, match="none of 2 ed25519 signatures is valid"):
        sign.verify(DATA + b"changed", detached, [verifier], "commit c")


def test_revoked_system_key_is_not_trusted(tmp_path: Path) -> None:
    secret, public = sign.generate_keypair()
    (tmp_path / "trusted.ed25519.d").mkdir()
    (tmp_path / "trusted.ed25519.d" / "vendor").write_text(public + "\n")
    trusted, revoked = sign.system_keys(tmp_path)
    assert trusted == (sign.parse_public(public),) and revoked == ()
    assert sign.verify(DATA, signed(secret), [Verifier("ed25519", trusted, revoked)], "c")
    (tmp_path / "revoked.ed25519").write_text(public + "\n")
    trusted, revoked = sign.system_keys(tmp_path)
    with pytest.raises(SignatureError):
        sign.verify(DATA, signed(secret), [Verifier("ed25519", trusted, revoked)], "c")


def test_dummy_engine_only_in_ostree_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    detached = sign.add_signature(None, b"dummysign", "dummy")
    verifier = Verifier("dummy", (b"dummysign",))
    monkeypatch.delenv(sign.DUMMY_ENABLED_ENV, raising=False)
    with pytest.raises(SignatureError, match="only for ostree testing"):
        sign.verify(DATA, detached, [verifier], "c")
    monkeypatch.setenv(sign.DUMMY_ENABLED_ENV, "1")
    assert sign.verify(DATA, detached, [verifier], "c") == "dummy: Signature verified"


def test_signature_of_wrong_length_refused() -> None:
    _secret, public = sign.generate_keypair()
    detached = sign.add_signature(None, b"\0" * 63)
    with pytest.raises(SignatureError, match="Invalid signature length of 63 bytes"):
        sign.verify(DATA, detached, [sign.parse_public(public)], "c")


def test_hostile_detached_metadata_is_refused_in_one_line() -> None:
    """Random or truncated bytes where an a{sv} should be: never accepted, never anything but SignatureError."""
    secret, public = sign.generate_keypair()
    key = sign.parse_public(public)
    good = signed(secret)
    generator = random.Random(7)
    samples = [bytes(generator.getrandbits(8) for _ in range(generator.randrange(0, 200))) for _ in range(200)]
    samples += [good[:cut] for cut in range(1, len(good))]
    for sample in samples:
        with pytest.raises(SignatureError) as raised:
            sign.verify(DATA, sample, [key, Verifier("dummy", (b"k",))], "summary")
        assert "\n" not in str(raised.value)
