"""OpenPGP verification of ostree's `ostree.gpgsigs` (detached signatures over commit or summary bytes),
through the real gpg tools: `gpg` to keep a remote's keyring, `gpgv` to check a signature against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from strata.errors import StrataError
from strata.image import gvariant

GPG_KEY = "ostree.gpgsigs"
GLOBAL_KEYRING_DIR = "/usr/share/ostree/trusted.gpg.d"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StrataError(f"{name} is not installed; it is needed for GPG signatures")
    return found


def import_keys(keyring: Path, key_file: Path) -> None:
    """Add the keys of key_file (armored or binary) to keyring (created if missing)."""
    with tempfile.TemporaryDirectory(prefix="strata-gpg-") as home:
        proc = subprocess.run([_tool("gpg"), "--homedir", home, "--batch", "--no-default-keyring", "--keyring",
                               str(keyring), "--import", str(key_file)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StrataError(f"importing GPG keys from {key_file} failed: {proc.stderr.strip().splitlines()[-1]}")


def sign(data: bytes, key_id: str, homedir: Path | None) -> bytes:
    """A binary detached OpenPGP signature of data, made by gpg with key_id."""
    with tempfile.TemporaryDirectory(prefix="strata-gpg-") as tmp:
        source = Path(tmp) / "data"
        source.write_bytes(data)
        argv = [_tool("gpg"), "--batch", "--yes", "--local-user", key_id, "--detach-sign", "--output",
                str(Path(tmp) / "data.sig")]
        if homedir is not None:
            argv[1:1] = ["--homedir", str(homedir)]
        proc = subprocess.run([*argv, str(source)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise StrataError(f"gpg could not sign: {lines[-1] if lines else 'failed'}")
        return (Path(tmp) / "data.sig").read_bytes()


def add_signature(detached: bytes | None, signature: bytes) -> bytes:
    entries = gvariant.decode("a{sv}", detached) if detached else []
    existing = [bytes(s) for s in gvariant.vardict_lookup(entries, GPG_KEY, "aay", [])]
    kept = [(k, v) for k, v in entries if k != GPG_KEY]
    return gvariant.encode("a{sv}", [*kept, (GPG_KEY, gvariant.Variant("aay", [*existing, signature]))])


def signatures(detached: bytes | None) -> list[bytes]:
    if not detached:
        return []
    entries = gvariant.decode("a{sv}", detached)
    return [bytes(s) for s in gvariant.vardict_lookup(entries, GPG_KEY, "aay", [])]


def trusted_keyrings(remote_keyring: Path) -> list[Path]:
    """The remote's keyring and the global ones: every *.gpg in $OSTREE_GPG_HOME, else in
    /usr/share/ostree/trusted.gpg.d (where ostree looks)."""
    rings = [remote_keyring] if remote_keyring.exists() else []
    global_dir = Path(os.environ.get("OSTREE_GPG_HOME") or GLOBAL_KEYRING_DIR)
    if global_dir.is_dir():
        rings += sorted(p for p in global_dir.iterdir() if p.name.endswith(".gpg") and p.is_file())
    return rings


def verify(data: bytes, detached: bytes | None, keyring: Path, what: str) -> None:
    found = signatures(detached)
    if not found:
        raise StrataError(f"{what}: no GPG signature found, but GPG verification is enabled")
    keyrings = trusted_keyrings(keyring)
    if not keyrings:
        raise StrataError(f"{what}: no trusted GPG keys for this remote (add them with --gpg-import)")
    with tempfile.TemporaryDirectory(prefix="strata-gpgv-") as tmp:
        data_path = Path(tmp) / "data"
        data_path.write_bytes(data)
        for index, signature in enumerate(found):
            sig_path = Path(tmp) / f"sig{index}"
            sig_path.write_bytes(signature)
            rings = [arg for ring in keyrings for arg in ("--keyring", str(ring))]
            proc = subprocess.run([_tool("gpgv"), "--homedir", tmp, *rings, str(sig_path), str(data_path)],
                                  capture_output=True, check=False)
            if proc.returncode == 0:
                return
    raise StrataError(f"{what}: none of {len(found)} GPG signatures is valid for the remote's keys")
