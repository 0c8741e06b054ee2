"""`ostree static-delta list|show|delete|generate|apply-offline|verify|indexes|reindex`, spelled and printed as
ostree 2022.7 does."""

from __future__ import annotations

import base64
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from strata.cli.ostree import Invocation, UsageError, Verb, dispatch
from strata.cli.ostree_options import array, flag, string
from strata.cli.ostree_util import resolve
from strata.errors import InvalidInputError, NotFoundError, StrataError
from strata.image import deltas, gvariant
from strata.image import sign as ed25519
from strata.units import human_size

if TYPE_CHECKING:
    from strata.image.delta_compile import Signer

DUMMY_KEY = "ostree.sign.dummy"


def static_delta(inv: Invocation) -> int:
    return dispatch(DELTA_VERBS, list(inv.args.values.get("__raw__", [])), "command")


def _list(inv: Invocation) -> int:
    names = [name for name, _digest in deltas.list_deltas(inv.repo())]
    print("\n".join(names) if names else "(No static deltas)")
    return 0


def _indexes(inv: Invocation) -> int:
    names = deltas.list_indexes(inv.repo())
    print("\n".join(names) if names else "(No static deltas indexes)")
    return 0


def _reindex(inv: Invocation) -> int:
    from strata.image.summary import write_delta_indexes
    repo = inv.repo()
    with repo.lock():
        write_delta_indexes(repo)
    return 0


def _delete(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("DELTA must be specified")
    repo = inv.repo()
    source, target = deltas.parse_delta_name(inv.positional[0])
    path = deltas.delta_dir(repo.path, source, target)
    if not path.is_dir():
        raise NotFoundError(f"Can't find delta {inv.positional[0]}")
    with repo.lock():
        shutil.rmtree(path)
    return 0


# ---------------------------------------------------------------- show


def _size(size: int) -> str:
    """GLib's g_format_size: a no-break space before a unit, a plain one before "bytes"."""
    text = human_size(size)
    return text if size < 1000 else text.replace(" ", "\u00a0")


def _show(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("DELTA must be specified")
    repo = inv.repo()
    delta_id = inv.positional[0]
    parsed, directory = deltas.read_superblock(repo, delta_id)
    print(f"Delta: {delta_id}")
    print(f"Signed: {'yes' if parsed.signed_body is not None else 'no'}")
    print(f"From: {parsed.source}" if parsed.source else "From <scratch>")
    print(f"To: {parsed.target}")
    print(f"Endianness: {parsed.endianness}")
    print(f"Timestamp: {parsed.timestamp}")
    print(f"Number of parents: {parsed.prerequisites}")
    print(f"Number of fallback entries: {len(parsed.fallbacks)}")
    for fallback in parsed.fallbacks:
        print(f"  {fallback.checksum}")
    fallback_size = sum(f.size for f in parsed.fallbacks)
    fallback_usize = sum(f.unpacked_size for f in parsed.fallbacks)
    print(f"Total Fallback Size: {fallback_size} ({_size(fallback_size)})")
    print(f"Total Fallback Uncompressed Size: {fallback_usize} ({_size(fallback_usize)})")
    print(f"Number of parts: {len(parsed.parts)}")
    for index, part in enumerate(parsed.parts):
        _show_part(parsed, directory, index, part)
    size = sum(p.size for p in parsed.parts)
    usize = sum(p.unpacked_size for p in parsed.parts)
    print(f"Total Part Size: {size} ({_size(size)})")
    print(f"Total Part Uncompressed Size: {usize} ({_size(usize)})")
    print(f"Total Size: {size + fallback_size} ({_size(size + fallback_size)})")
    print(f"Total Uncompressed Size: {usize + fallback_usize} ({_size(usize + fallback_usize)})")
    return 0


def _show_part(parsed: deltas.Superblock, directory: Path, index: int, part: deltas.DeltaPart) -> None:
    print(f"PartMeta{index}: nobjects={len(part.objects)} size={part.size} usize={part.unpacked_size}")
    sys.stdout.flush()
    data = deltas.read_part(parsed, directory, index)
    modes, xattrs, payload, ops = deltas.part_body(data, part.unpacked_size)
    print(f"PartPayload{index}: nmodes={len(modes)} nxattrs={len(xattrs)} blobsize={len(payload)} opsize={len(ops)}")
    counts = deltas.count_operations(data, part)
    print(f"PartPayloadOps{index}: openspliceclose={counts[deltas.OP_OPEN_SPLICE_AND_CLOSE]} "
          f"open={counts[deltas.OP_OPEN]} write={counts[deltas.OP_WRITE]} "
          f"setread={counts[deltas.OP_SET_READ_SOURCE]} unsetread={counts[deltas.OP_UNSET_READ_SOURCE]} "
          f"close={counts[deltas.OP_CLOSE]} bspatch={counts[deltas.OP_BSPATCH]}")


# ---------------------------------------------------------------- generate


def _megabytes(text: str | None, default: int) -> int:
    """ostree reads these with strtoull: leading digits, anything else is 0."""
    if text is None:
        return default
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 0


def _endianness(inv: Invocation) -> str:
    chosen = inv.args.string("set-endianness")
    if chosen is not None and chosen not in ("l", "B"):
        raise InvalidInputError(f"Invalid endianness '{chosen}'")
    endianness = chosen or ("l" if sys.byteorder == "little" else "B")
    if inv.args.flag("swap-endianness"):
        endianness = "B" if endianness == "l" else "l"
    return endianness


def _generate(inv: Invocation) -> int:
    from strata.image.delta_compile import DeltaOptions, generate
    a = inv.args
    repo = inv.repo()
    repo.check_writable()
    target_rev = a.string("to") or (inv.positional[0] if inv.positional else None)
    if target_rev is None:
        raise UsageError("TO revision must be specified")
    if a.flag("empty") and a.string("from"):
        raise UsageError("Cannot specify both --empty and --from=REV")
    source = None if a.flag("empty") else resolve(repo, a.string("from") or f"{target_rev}^")
    target = resolve(repo, target_rev)
    name = deltas.delta_name(source, target)
    if a.flag("if-not-exists") and (deltas.delta_dir(repo.path, source, target) / "superblock").exists():
        print(f"Delta {name} already exists.")
        return 0
    endianness = _endianness(inv)
    filename = a.string("filename")
    if filename == "":
        raise InvalidInputError("Invalid 'filename' parameter")
    options = DeltaOptions(
        min_fallback_size=_megabytes(a.string("min-fallback-size"), 4),
        max_bsdiff_size=_megabytes(a.string("max-bsdiff-size"), 128),
        max_chunk_size=_megabytes(a.string("max-chunk-size"), 32),
        bsdiff=not a.flag("disable-bsdiff"), inline=a.flag("inline"), endianness=endianness,
        filename=Path(filename) if filename else None, signer=_signer(inv))
    print("Generating static delta:")
    print(f"  From: {source or 'empty'}")
    print(f"  To:   {target}")
    sys.stdout.flush()
    with repo.lock():
        stats = generate(repo, source, target, options)
    print("\n".join(stats.report()), file=sys.stderr)
    return 0


def _secret_keys(inv: Invocation) -> list[str]:
    keys = inv.args.strings("sign")
    keys_file = inv.args.string("keys-file")
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise InvalidInputError(f"File object '{keys_file}' is not a regular file")
        keys += path.read_text().splitlines()
    return keys


def _signer(inv: Invocation) -> Signer | None:
    keys = _secret_keys(inv)
    if not keys:
        return None
    sign_type = inv.args.string("sign-type") or "ed25519"
    from strata.cli.ostree_sign import detached_signatures

    def sign(body: bytes) -> list[tuple[str, gvariant.Variant]]:
        entries: list[tuple[str, gvariant.Variant]] = gvariant.decode("a{sv}", detached_signatures(body, keys,
                                                                                                    sign_type))
        return entries
    sign(b"")  # a bad key or type fails before anything is generated
    return sign


# ---------------------------------------------------------------- signatures, apply-offline


def _public_keys(inv: Invocation, sign_type: str) -> list[str]:
    """Key arguments after the delta, then --keys-file, then (when there are none) --keys-dir."""
    keys = list(inv.positional[1:])
    keys_file = inv.args.string("keys-file")
    if keys_file:
        try:
            keys += [line.strip() for line in Path(keys_file).read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            raise NotFoundError(f"Can't open file '{keys_file}' with public keys") from None
    keys_dir = inv.args.string("keys-dir")
    if not keys and keys_dir:
        revoked = set(_keys_in(Path(keys_dir), f"revoked.{sign_type}"))
        keys += [key for key in _keys_in(Path(keys_dir), f"trusted.{sign_type}") if key not in revoked]
    return keys


def _keys_in(base: Path, name: str) -> list[str]:
    """Keys of a keys directory: the file `name` and every file in `name.d`, one key per line."""
    keys = []
    for path in [base / name, *sorted((base / f"{name}.d").glob("*"))]:
        if path.is_file():
            keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return keys


def check_signature(parsed: deltas.Superblock, sign_type: str, keys: list[str]) -> None:
    """One of the superblock's signatures of sign_type must verify with one of keys; else ostree's error."""
    if parsed.signed_body is None:
        raise StrataError("no signatures in static-delta")
    key_name = DUMMY_KEY if sign_type == "dummy" else ed25519.ED25519_KEY
    found = [bytes(s) for s in gvariant.vardict_lookup(parsed.signatures, key_name, "aay", None) or []]
    if not found:
        raise StrataError(f"no signature for '{key_name}' in static-delta superblock")
    if sign_type == "dummy":
        if not any(signature.decode(errors="replace") in keys for signature in found):
            raise StrataError(f"signature: dummy: incorrect signatures found: {len(found)}")
        return
    public = [_ed25519_public(key) for key in keys]
    detached = gvariant.encode("a{sv}", [(ed25519.ED25519_KEY, gvariant.Variant("aay", found))])
    try:
        ed25519.verify(parsed.signed_body, detached, public, "static delta")
    except StrataError:
        tried = len(public) * len(found)
        if tried > 3 or not public:
            raise StrataError(f"ed25519: Signature couldn't be verified; tried {tried} keys") from None
        names = "; ".join(f"key '{key.hex()}'" for key in public for _ in found)
        raise StrataError(f"ed25519: Signature couldn't be verified with: {names}") from None


def _ed25519_public(key: str) -> bytes:
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        raise InvalidInputError("Incorrect ed25519 public key") from None
    if len(raw) != 32:
        raise InvalidInputError("Incorrect ed25519 public key")
    return raw


def _sign_type(inv: Invocation) -> str:
    sign_type = inv.args.string("sign-type") or "ed25519"
    if sign_type not in ("ed25519", "dummy"):
        raise InvalidInputError(f"Signing type {sign_type} is not supported")
    return sign_type


def _verify(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("DELTA must be specified")
    repo = inv.repo()
    sign_type = _sign_type(inv)
    parsed, _directory = deltas.read_superblock(repo, inv.positional[0])
    keys = _public_keys(inv, sign_type)
    try:
        check_signature(parsed, sign_type, keys)
    except StrataError:
        print("Verification fails")
        raise
    print("Verification OK")
    return 0


def _apply_offline(inv: Invocation) -> int:
    if not inv.positional:
        raise UsageError("PATH must be specified")
    repo = inv.repo()
    repo.check_writable()
    sign_type = _sign_type(inv)
    keys = _public_keys(inv, sign_type)
    mandatory = repo.config.get("core", "sign-verify-deltas") == "true"

    def check(parsed: deltas.Superblock) -> None:
        if parsed.signed_body is None:
            return
        if not (keys or inv.args.string("keys-file") or inv.args.string("keys-dir")):
            if mandatory:
                raise StrataError("Key is mandatory to check delta signature")
            return
        check_signature(parsed, sign_type, keys)

    deltas.apply_offline(repo, Path(inv.positional[0]), check)
    return 0


DELTA_VERBS = {
    "list": Verb("list", _list),
    "show": Verb("show", _show),
    "delete": Verb("delete", _delete),
    "generate": Verb("generate", _generate, (
        string("from"), flag("empty"), flag("inline"), string("to"), flag("disable-bsdiff"),
        flag("if-not-exists", "n"), string("set-endianness"), flag("swap-endianness"),
        string("min-fallback-size"), string("max-bsdiff-size"), string("max-chunk-size"), string("filename"),
        array("sign"), string("sign-type"), string("keys-file"))),
    "apply-offline": Verb("apply-offline", _apply_offline, (string("sign-type"), string("keys-file"),
                                                            string("keys-dir"))),
    "verify": Verb("verify", _verify, (string("sign-type"), string("keys-file"), string("keys-dir"))),
    "indexes": Verb("indexes", _indexes),
    "reindex": Verb("reindex", _reindex, (string("to"),)),
}

VERBS = (Verb("static-delta", static_delta, has_subverbs=True),)
