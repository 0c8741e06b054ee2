"""`ostree sign` and the --sign/--sign-type options of commit, summary and static-delta: ed25519 and the
'dummy' test engine of ostree."""

from __future__ import annotations

import base64
from pathlib import Path

from strata.cli.ostree import Invocation, UsageError
from strata.errors import InvalidInputError, StrataError
from strata.image import gvariant
from strata.image import sign as ed25519
from strata.image.gvariant import Variant
from strata.image.objects import ObjectType
from strata.image.repo import Repo

DUMMY_KEY = "ostree.sign.dummy"
SIGN_TYPES = ("ed25519", "dummy")


def _check_type(sign_type: str) -> None:
    if sign_type not in SIGN_TYPES:
        raise InvalidInputError(f"Requested signature type is not implemented: {sign_type}")


def add_signatures(detached: bytes | None, data: bytes, keys: list[str], sign_type: str) -> bytes:
    _check_type(sign_type)
    for key in keys:
        if sign_type == "dummy":
            detached = _add_dummy(detached, key)
        else:
            detached = ed25519.add_signature(detached, ed25519.sign(data, ed25519.load_secret(key)))
    assert detached is not None
    return detached


def _add_dummy(detached: bytes | None, key: str) -> bytes:
    entries = [(k, v) for k, v in (gvariant.decode("a{sv}", detached) if detached else []) if k != DUMMY_KEY]
    return gvariant.encode("a{sv}", [*entries, (DUMMY_KEY, Variant("aay", [key.encode()]))])


def detached_signatures(data: bytes, keys: list[str], sign_type: str) -> bytes:
    return add_signatures(None, data, keys, sign_type)


def sign_commit(repo: Repo, checksum: str, keys: list[str], sign_type: str) -> None:
    data = repo.read_metadata(checksum, ObjectType.COMMIT)
    repo.write_detached_metadata(checksum, add_signatures(repo.read_detached_metadata(checksum), data, keys,
                                                          sign_type))


def _verify(repo: Repo, checksum: str, keys: list[str], sign_type: str) -> None:
    data = repo.read_metadata(checksum, ObjectType.COMMIT)
    detached = repo.read_detached_metadata(checksum)
    if sign_type == "dummy":
        entries = dict(gvariant.decode("a{sv}", detached)) if detached else {}
        found = [bytes(s).decode() for s in getattr(entries.get(DUMMY_KEY), "value", [])]
        if not any(key in found for key in keys):
            raise StrataError("signature: dummy: incorrect signature")
        return
    public = [base64.b64decode(key) for key in keys]
    ed25519.verify(data, detached, public, f"commit {checksum}")


def sign_verb(inv: Invocation) -> int:
    a = inv.args
    sign_type = a.string("sign-type") or "ed25519"
    _check_type(sign_type)
    if not inv.positional:
        raise UsageError("Need a COMMIT to sign or verify")
    from strata.cli.ostree_util import resolve
    repo = inv.repo()
    checksum = resolve(repo, inv.positional[0])
    keys = list(inv.positional[1:])
    if a.string("keys-file"):
        keys += [line.strip() for line in Path(a.string("keys-file") or "").read_text().splitlines() if line.strip()]
    if a.flag("verify"):
        _verify(repo, checksum, keys, sign_type)
        print(f"Signature verified successfully with key {keys[0] if keys else ''}".rstrip())
        return 0
    if not keys:
        raise UsageError("No keys found")
    with repo.lock():
        sign_commit(repo, checksum, keys, sign_type)
    return 0
