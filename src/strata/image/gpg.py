"""OpenPGP verification of ostree's `ostree.gpgsigs` (detached signatures over commit or summary bytes),
through the real gpg tools: `gpg` to keep a remote's keyring, `gpgv` to check a signature against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
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


def describe(data: bytes, detached: bytes | None, keyrings: list[Path]) -> list[list[str]]:
    """What ostree's `show` says about each GPG signature of data: when and with which key it was made, and
    whether that key is trusted and the signature good (from gpgv's status lines)."""
    reports = []
    with tempfile.TemporaryDirectory(prefix="strata-gpgv-") as tmp:
        data_path = Path(tmp) / "data"
        data_path.write_bytes(data)
        rings = [arg for ring in keyrings for arg in ("--keyring", str(ring))]
        for index, signature in enumerate(signatures(detached)):
            sig_path = Path(tmp) / f"sig{index}"
            sig_path.write_bytes(signature)
            proc = subprocess.run([_tool("gpgv"), "--homedir", tmp, "--status-fd", "1", *rings, str(sig_path),
                                   str(data_path)], capture_output=True, text=True, check=False)
            reports.append(_describe_status(proc.stdout, keyrings))
    return reports


_PUBKEY_ALGOS = {"1": "RSA", "17": "DSA", "19": "ECDSA", "22": "EdDSA"}


def _describe_status(status: str, keyrings: list[Path]) -> list[str]:
    fields = {line.split()[1]: line.split()[2:] for line in status.splitlines()
              if line.startswith("[GNUPG:] ") and len(line.split()) > 1}
    key_id, algo, made, primary, verdict = "", "", "", "", ""
    if "ERRSIG" in fields:  # ERRSIG keyid pkalgo hashalgo class time rc fpr
        err = fields["ERRSIG"]
        key_id, algo, made = err[0], _PUBKEY_ALGOS.get(err[1], err[1]), err[4] if len(err) > 4 else ""
        verdict = "Can't check signature: public key not found"
    for word, text in (("GOODSIG", "Good signature from"), ("EXPKEYSIG", "BAD signature from"),
                       ("BADSIG", "BAD signature from"), ("REVKEYSIG", "BAD signature from")):
        if word in fields:
            key_id = fields[word][0]
            verdict = f'{text} "{_user_id(" ".join(fields[word][1:]))}"'
    if "VALIDSIG" in fields:  # VALIDSIG fpr date timestamp expires version reserved pkalgo hashalgo class primary
        valid = fields["VALIDSIG"]
        made = valid[2]
        algo = _PUBKEY_ALGOS.get(valid[6], valid[6]) if len(valid) > 6 else algo
        primary = valid[9][-16:] if len(valid) > 9 and not valid[9].endswith(key_id) else ""
    lines = [f"Signature made {_date(made)} using {algo or 'unknown'} key ID {key_id}", verdict]
    if "EXPKEYSIG" in fields:
        lines.append(f"Key expired {_date(fields.get('KEYEXPIRED', [''])[0])}")
    if "REVKEYSIG" in fields:
        lines.append("Key revoked")
    if primary:
        lines.append(f"Primary key ID {primary}")
        expired = _primary_expiry(fields["VALIDSIG"][9], keyrings)
        if expired:
            lines.append(f"Primary key expired {_date(expired)}")
    return lines


def _date(stamp: str) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(int(stamp))) if stamp.isdigit() else stamp


def _primary_expiry(fingerprint: str, keyrings: list[Path]) -> str | None:
    """When the primary key of fingerprint expired (gpg's key listing), or None while it is valid."""
    rings = [arg for ring in keyrings for arg in ("--keyring", str(ring))]
    with tempfile.TemporaryDirectory(prefix="strata-gpg-") as home:
        proc = subprocess.run([_tool("gpg"), "--homedir", home, "--batch", "--no-default-keyring", *rings,
                               "--with-colons", "--list-keys", fingerprint], capture_output=True, text=True,
                              check=False)
    for line in proc.stdout.splitlines():
        fields = line.split(":")
        if fields[0] == "pub" and len(fields) > 6:
            return fields[6] if fields[1] == "e" else None
    return None


def _user_id(text: str) -> str:
    """ostree names a signer as "Name <email>", with empty brackets when the user ID has no address."""
    return text if "<" in text else f"{text} <>"
