"""`ostree sign` and the --sign/--sign-type options of commit, summary and static-delta: ed25519 and the
'dummy' test engine of ostree."""

from __future__ import annotations

from pathlib import Path

from strata.cli.ostree import Invocation, UsageError
from strata.errors import InvalidInputError, StrataError
from strata.image import sign as signatures
from strata.image.fsutil import read_capped
from strata.image.objects import ObjectType
from strata.image.repo import Repo

DUMMY_KEY = signatures.DUMMY_KEY
SIGN_TYPES = tuple(signatures.METADATA_KEYS)
_MAX_KEYS_FILE = 1 << 20


def _check_type(sign_type: str) -> None:
    signatures.check_engine(sign_type)


def add_signatures(detached: bytes | None, data: bytes, keys: list[str], sign_type: str) -> bytes:
    """detached metadata with one signature of data per secret key appended (the dummy engine's 'signature'
    is the key text itself)."""
    _check_type(sign_type)
    for key in keys:
        signature = key.encode() if sign_type == signatures.DUMMY else signatures.sign(
            data, signatures.load_secret(key))
        detached = signatures.add_signature(detached, signature, sign_type)
    if detached is None:
        raise UsageError("No keys found")
    return detached


def detached_signatures(data: bytes, keys: list[str], sign_type: str) -> bytes:
    return add_signatures(None, data, keys, sign_type)


def sign_commit(repo: Repo, checksum: str, keys: list[str], sign_type: str) -> None:
    data = repo.read_metadata(checksum, ObjectType.COMMIT)
    repo.write_detached_metadata(checksum, add_signatures(repo.read_detached_metadata(checksum), data, keys,
                                                          sign_type))


def _verify(repo: Repo, checksum: str, keys: list[str], sign_type: str, *, keys_file: str | None,
            keys_dir: str | None) -> str:
    """ostree's success message when a signature of the commit verifies: with one of the keys given, else
    with those of keys_file, else with those under keys_dir (or the system's key directories)."""
    data = repo.read_metadata(checksum, ObjectType.COMMIT)
    detached = repo.read_detached_metadata(checksum)
    found = signatures.signatures(detached, sign_type)
    for key in keys:
        try:
            return _verifier(sign_type, [key]).check(data, found)
        except (StrataError, ValueError):
            continue
    if keys and not keys_file:
        raise StrataError("No valid signatures found")
    return _stored_keys_verifier(sign_type, keys_file, keys_dir).check(data, found)


def _verifier(sign_type: str, keys: list[str]) -> signatures.Verifier:
    if sign_type == signatures.DUMMY:
        return signatures.Verifier(sign_type, tuple(key.encode() for key in keys[-1:]))  # it holds one key
    return signatures.Verifier(sign_type, tuple(signatures.parse_public(key) for key in keys))


def _stored_keys_verifier(sign_type: str, keys_file: str | None, keys_dir: str | None) -> signatures.Verifier:
    if sign_type == signatures.DUMMY:
        raise StrataError("dummy: loading keys from files is not implemented")
    if keys_file:
        return signatures.Verifier(sign_type, tuple(signatures.keys_from_file(Path(keys_file))))
    trusted, revoked = signatures.system_keys(Path(keys_dir) if keys_dir else None)
    return signatures.Verifier(sign_type, trusted, revoked)


def _secret_keys_of(path: str) -> list[str]:
    """The secret keys of a --keys-file, one a line."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"File object '{path}' is not a regular file")
    text = read_capped(file, _MAX_KEYS_FILE)
    return [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]


def sign_verb(inv: Invocation) -> int:
    a = inv.args
    sign_type = a.string("sign-type") or signatures.ED25519
    if not inv.positional:
        raise UsageError("Need a COMMIT to sign or verify")
    keys_file = a.string("keys-file")
    if not a.flag("verify") and not keys_file and len(inv.positional) < 2:
        raise UsageError("Need at least one KEY-ID to sign with")
    _check_type(sign_type)
    from strata.cli.ostree_util import resolve
    repo = inv.repo()
    checksum = resolve(repo, inv.positional[0])
    keys = list(inv.positional[1:])
    if a.flag("verify"):
        print(_verify(repo, checksum, keys, sign_type, keys_file=keys_file, keys_dir=a.string("keys-dir")))
        return 0
    if keys_file:
        keys += _secret_keys_of(keys_file)
    with repo.lock():
        sign_commit(repo, checksum, keys, sign_type)
    return 0
