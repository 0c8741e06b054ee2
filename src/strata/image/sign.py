"""ostree's signature engines: ed25519 (PyNaCl) and the test-only 'dummy'. A signature lives in a commit's
detached metadata or in summary.sig, an a{sv} whose `ostree.sign.ed25519` / `ostree.sign.dummy` entry (aay)
lists signatures over the exact bytes of the commit object or of the summary.

A remote's verification is a list of Verifiers, one per engine, each with the keys it trusts; the data is
accepted when one signature of one engine verifies with one of that engine's keys (ostree's rules)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from strata.errors import CorruptionError, InvalidInputError, StrataError
from strata.image import gvariant
from strata.image.fsutil import read_capped
from strata.image.gvariant import Variant

if TYPE_CHECKING:  # PyNaCl loads a native library: imported where a key is used
    import nacl.signing

ED25519 = "ed25519"
DUMMY = "dummy"
ED25519_KEY = "ostree.sign.ed25519"
DUMMY_KEY = "ostree.sign.dummy"
METADATA_KEYS = {ED25519: ED25519_KEY, DUMMY: DUMMY_KEY}  # ostree tries them in this order
SYSTEM_KEY_DIRS = (Path("/etc/ostree"), Path("/usr/share/ostree"))
DUMMY_ENABLED_ENV = "OSTREE_DUMMY_SIGN_ENABLED"
_MAX_KEY_FILE = 1 << 20  # a key is 45 bytes of text; this is thousands of keys
_ED25519_PUBLIC_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64


class SignatureError(StrataError):
    """Signatures were present but none verified, or the keys to check them with are missing."""


def check_engine(name: str) -> str:
    """name itself when ostree knows a signature engine of that name."""
    if name not in METADATA_KEYS:
        raise InvalidInputError(f"Requested signature type is not implemented: {name}")
    return name


# ---------------------------------------------------------------- keys


def generate_keypair() -> tuple[str, str]:
    """(secret, public) in ostree's text form: base64 of the 64-byte secret (seed + public) and of the public."""
    import nacl.signing
    key = nacl.signing.SigningKey.generate()
    secret = bytes(key) + bytes(key.verify_key)
    return base64.b64encode(secret).decode(), base64.b64encode(bytes(key.verify_key)).decode()


def load_secret(text: str) -> nacl.signing.SigningKey:
    raw = _b64(text.strip())
    if len(raw) == 64:
        raw = raw[:32]
    if len(raw) != 32:
        raise InvalidInputError("an ed25519 secret key is 32 or 64 bytes (base64)")
    import nacl.signing
    return nacl.signing.SigningKey(raw)


def parse_public(text: str) -> bytes:
    """One ed25519 public key in ostree's text form (base64 of 32 bytes)."""
    raw = _b64(text.strip())
    if len(raw) != _ED25519_PUBLIC_SIZE:
        raise InvalidInputError("Incorrect ed25519 public key (base64 of 32 bytes expected)")
    return raw


def public_keys(spec: str) -> list[bytes]:
    """`inline:BASE64` or `file:PATH` (one key per line) as raw 32-byte public keys."""
    kind, _, value = spec.partition(":")
    if kind == "inline":
        return [parse_public(value)]
    if kind == "file":
        return keys_from_file(Path(value))
    raise InvalidInputError(f"unsupported key specification {spec!r} (inline:KEY or file:PATH)")


def keys_from_file(path: Path) -> list[bytes]:
    """The valid ed25519 keys of a key file (one base64 key a line; other lines are skipped, as ostree does);
    a file without any is refused."""
    if not path.is_file():
        raise InvalidInputError(f"File object '{path}' is not a regular file")
    data = read_capped(path, _MAX_KEY_FILE, "key file")
    keys = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            keys.append(parse_public(line))
        except InvalidInputError:
            continue
    if not keys:
        raise InvalidInputError(f"signature: ed25519: no valid keys in file '{path}'")
    return keys


def system_keys(basedir: Path | None = None) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(trusted, revoked) ed25519 keys of BASE/trusted.ed25519 and BASE/trusted.ed25519.d/* (revoked.* alike)
    for basedir, or for /etc/ostree and /usr/share/ostree; unreadable files are skipped, no trusted key at
    all is refused."""
    bases = (basedir,) if basedir is not None else SYSTEM_KEY_DIRS
    trusted = _keys_under(bases, "trusted.ed25519")
    if not trusted:
        raise SignatureError("signature: ed25519: no keys loaded")
    return tuple(trusted), tuple(_keys_under(bases, "revoked.ed25519"))


def _keys_under(bases: Sequence[Path], name: str) -> list[bytes]:
    keys: list[bytes] = []
    for base in bases:
        folder = base / f"{name}.d"
        files = [base / name] + (sorted(folder.iterdir()) if folder.is_dir() else [])
        for path in files:
            try:
                keys += [key for key in keys_from_file(path) if key not in keys]
            except (InvalidInputError, OSError):
                continue
    return keys


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidInputError("key is not valid base64") from None


# ---------------------------------------------------------------- signing


def sign(data: bytes, secret: nacl.signing.SigningKey) -> bytes:
    return bytes(secret.sign(data).signature)


def add_signature(detached: bytes | None, signature: bytes, engine: str = ED25519) -> bytes:
    """detached metadata (a{sv}) with signature appended to the engine's list (a repeated one is kept once)."""
    key = METADATA_KEYS[check_engine(engine)]
    entries = _entries(detached)
    existing = [bytes(s) for s in gvariant.vardict_lookup(entries, key, "aay", [])]
    if signature not in existing:
        existing.append(signature)
    kept = [(k, v) for k, v in entries if k != key]
    return gvariant.encode("a{sv}", [*kept, (key, Variant("aay", existing))])


def signatures(detached: bytes | None, engine: str = ED25519) -> list[bytes]:
    """The engine's signatures in detached metadata; metadata that is not an a{sv} holds none."""
    key = METADATA_KEYS[check_engine(engine)]
    return [bytes(s) for s in gvariant.vardict_lookup(_entries(detached), key, "aay", [])]


def _entries(detached: bytes | None) -> list[tuple[str, Variant]]:
    if not detached:
        return []
    try:
        entries: list[tuple[str, Variant]] = gvariant.decode("a{sv}", detached, strict=False)
    except CorruptionError:
        return []  # GLib reads malformed serialised data as empty; so do we: no signatures in it
    return entries


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verifier:
    """One engine and the keys it trusts. An ed25519 verifier without keys uses the system's key files
    (trusted.ed25519 and .d in /etc/ostree and /usr/share/ostree, minus the revoked ones) when it checks."""
    engine: str
    keys: tuple[bytes, ...] = ()
    revoked: tuple[bytes, ...] = ()

    def check(self, data: bytes, found: list[bytes]) -> str:
        """ostree's success message when one of found verifies data, else SignatureError in ostree's words."""
        if self.engine == DUMMY:
            return _check_dummy(self.keys, found)
        keys, revoked = (self.keys, self.revoked) if self.keys else system_keys()
        return _check_ed25519(data, found, [key for key in keys if key not in revoked])


def _check_ed25519(data: bytes, found: list[bytes], keys: list[bytes]) -> str:
    import nacl.exceptions
    import nacl.signing
    failed: list[str] = []
    for signature in found:
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            raise SignatureError(f"Invalid signature length of {len(signature)} bytes, expected "
                                 f"{_ED25519_SIGNATURE_SIZE}")
        for key in keys:
            try:
                nacl.signing.VerifyKey(key).verify(data, signature)
            except nacl.exceptions.BadSignatureError:
                failed.append(key.hex())
                continue
            return f"ed25519: Signature verified successfully with key '{key.hex()}'"
    if not failed:
        raise SignatureError("ed25519: no signatures found")
    if len(failed) > 3:  # a key file may hold many keys: name a few, count the rest
        raise SignatureError(f"ed25519: Signature couldn't be verified; tried {len(failed)} keys")
    raise SignatureError("ed25519: Signature couldn't be verified with: "
                         + "; ".join(f"key '{key}'" for key in failed))


def _check_dummy(keys: tuple[bytes, ...], found: list[bytes]) -> str:
    if os.environ.get(DUMMY_ENABLED_ENV) != "1":
        raise SignatureError(f"dummy signature type is only for ostree testing ({DUMMY_ENABLED_ENV}=1)")
    if any(signature.split(b"\0", 1)[0] in keys for signature in found):
        return "dummy: Signature verified"
    if found:
        raise SignatureError(f"signature: dummy: incorrect signatures found: {len(found)}")
    raise SignatureError("signature: dummy: no signatures")


def verify(data: bytes, detached: bytes | None, verifiers: Sequence[Verifier | bytes], what: str) -> str:
    """Accept data when one engine's signature verifies with one of its keys; returns ostree's success message.
    Raw bytes in verifiers are ed25519 public keys (one verifier for all of them)."""
    checked = _as_verifiers(verifiers)
    engines = " or ".join(dict.fromkeys(verifier.engine for verifier in checked))
    if not detached:
        raise SignatureError(f"{what}: no {engines} signature found (No signatures found: no detached metadata)")
    entries = _entries(detached)
    problems: list[str] = []
    for verifier in checked:
        found = [bytes(s) for s in gvariant.vardict_lookup(entries, METADATA_KEYS[verifier.engine], "aay", [])]
        if not found:
            continue
        try:
            return verifier.check(data, found)
        except SignatureError as exc:
            problems.append(f"none of {len(found)} {verifier.engine} signatures is valid: {exc}")
    if not problems:
        raise SignatureError(f"{what}: no {engines} signature found (No signatures found)")
    others = f" ({len(problems) - 1} other engines' signatures invalid too)" if len(problems) > 1 else ""
    raise SignatureError(f"Can't verify {what}: {problems[0]}{others}")


def _as_verifiers(items: Sequence[Verifier | bytes]) -> list[Verifier]:
    keys = tuple(item for item in items if isinstance(item, bytes))
    verifiers = [item for item in items if isinstance(item, Verifier)]
    return [*verifiers, Verifier(ED25519, keys)] if keys else verifiers


# ---------------------------------------------------------------- a remote's configuration


KeyOption = Callable[[str], "str | None"]


def verifiers_from_config(setting: str | None, option: KeyOption) -> tuple[Verifier, ...]:
    """The verifiers of a remote's `sign-verify` (or `sign-verify-summary`) value: true means every engine,
    with the keys configured for it if any; a list of engine names means those, each with keys it must have;
    false or nothing means no verification. option(NAME) reads the remote's key NAME."""
    if setting is None or setting.strip() in ("", "false", "0"):
        return ()
    if setting.strip() in ("true", "1"):
        return tuple(_verifier(engine, option, required=False) for engine in METADATA_KEYS)
    names = [name.strip() for name in setting.replace(",", ";").split(";") if name.strip()]
    return tuple(_verifier(check_engine(name), option, required=True) for name in names)


def _verifier(engine: str, option: KeyOption, *, required: bool) -> Verifier:
    inline = option(f"verification-{engine}-key")
    key_file = option(f"verification-{engine}-file")
    if inline is None and key_file is None:
        if required:
            raise SignatureError(f"No keys found for required signapi type {engine}")
        return Verifier(engine)
    keys: list[bytes] = []
    if key_file is not None:
        keys += _file_keys(engine, key_file)
    if inline is not None:
        keys.append(_inline_key(engine, inline))
    return Verifier(engine, tuple(dict.fromkeys(keys)))


def _file_keys(engine: str, key_file: str) -> list[bytes]:
    if engine == DUMMY:  # the dummy engine has no key files
        raise SignatureError(f"Failed loading 'dummy' keys from '{key_file}'")
    try:
        return keys_from_file(Path(key_file))
    except (InvalidInputError, OSError) as exc:
        raise SignatureError(f"Failed loading '{engine}' keys from '{key_file}': {exc}") from None


def _inline_key(engine: str, text: str) -> bytes:
    if engine == DUMMY:
        return text.encode()
    try:
        return parse_public(text)
    except InvalidInputError:
        raise SignatureError(f"Failed loading '{engine}' keys from inline `verification-key`") from None
