"""Ed25519 signatures in ostree's format (PyNaCl): detached metadata `ostree.sign.ed25519` (aay) holding
64-byte signatures over the exact bytes of a commit object or of the summary."""

from __future__ import annotations

import base64
from pathlib import Path

import nacl.exceptions
import nacl.signing

from strata.errors import InvalidInputError, StrataError
from strata.image import gvariant
from strata.image.gvariant import Variant

ED25519_KEY = "ostree.sign.ed25519"


def generate_keypair() -> tuple[str, str]:
    """(secret, public) in ostree's text form: base64 of the 64-byte secret (seed + public) and of the public."""
    key = nacl.signing.SigningKey.generate()
    secret = bytes(key) + bytes(key.verify_key)
    return base64.b64encode(secret).decode(), base64.b64encode(bytes(key.verify_key)).decode()


def load_secret(text: str) -> nacl.signing.SigningKey:
    raw = _b64(text.strip())
    if len(raw) == 64:
        raw = raw[:32]
    if len(raw) != 32:
        raise InvalidInputError("an ed25519 secret key is 32 or 64 bytes (base64)")
    return nacl.signing.SigningKey(raw)


def public_keys(spec: str) -> list[bytes]:
    """`inline:BASE64` or `file:PATH` (one key per line) as raw 32-byte public keys."""
    kind, _, value = spec.partition(":")
    if kind == "inline":
        texts = [value]
    elif kind == "file":
        texts = [line for line in Path(value).read_text().split() if line]
    else:
        raise InvalidInputError(f"unsupported key specification {spec!r} (inline:KEY or file:PATH)")
    keys = [_b64(t) for t in texts]
    if any(len(k) != 32 for k in keys):
        raise InvalidInputError("an ed25519 public key is 32 bytes (base64)")
    return keys


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise InvalidInputError("key is not valid base64") from None


def sign(data: bytes, secret: nacl.signing.SigningKey) -> bytes:
    return bytes(secret.sign(data).signature)


def add_signature(detached: bytes | None, signature: bytes) -> bytes:
    """detached metadata (a{sv}) with signature appended to ostree.sign.ed25519."""
    entries = gvariant.decode("a{sv}", detached) if detached else []
    existing = list(gvariant.vardict_lookup(entries, ED25519_KEY, "aay", []))
    if signature not in existing:
        existing.append(signature)
    kept = [(k, v) for k, v in entries if k != ED25519_KEY]
    return gvariant.encode("a{sv}", [*kept, (ED25519_KEY, Variant("aay", existing))])


def signatures(detached: bytes | None) -> list[bytes]:
    if not detached:
        return []
    entries = gvariant.decode("a{sv}", detached)
    return [bytes(s) for s in gvariant.vardict_lookup(entries, ED25519_KEY, "aay", [])]


def verify(data: bytes, detached: bytes | None, keys: list[bytes], what: str) -> None:
    """At least one signature must verify with one of keys, else the data is refused."""
    found = signatures(detached)
    if not found:
        raise StrataError(f"{what}: no ed25519 signature found, but signature verification is required")
    for key in keys:
        verifier = nacl.signing.VerifyKey(key)
        for signature in found:
            if len(signature) != 64:
                continue
            try:
                verifier.verify(data, signature)
                return
            except nacl.exceptions.BadSignatureError:
                continue
    raise StrataError(f"{what}: none of {len(found)} ed25519 signatures is valid for the configured keys")
