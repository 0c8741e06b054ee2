"""OpenPGP verification of ostree's `ostree.gpgsigs` (detached signatures over commit or summary bytes),
through the real gpg tools: `gpg` to keep a remote's keyring, `gpgv` to check a signature against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from strata.errors import CorruptionError, StrataError
from strata.image import gvariant

GPG_KEY = "ostree.gpgsigs"
GLOBAL_KEYRING_DIR = "/usr/share/ostree/trusted.gpg.d"
_NOT_KEYRINGS = ("trustdb.gpg", "secring.gpg")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StrataError(f"{name} is not installed; it is needed for GPG signatures")
    return found


def import_keys(keyring: Path, key_file: Path) -> None:
    """Add the keys of key_file (armored or binary) to keyring (created if missing, in the OpenPGP keyring
    format ostree reads)."""
    from strata.image.gpgkeys import import_into
    import_into(keyring, [key_file])


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
    """The OpenPGP signatures in detached metadata; metadata that is not an a{sv} holds none."""
    if not detached:
        return []
    try:
        entries = gvariant.decode("a{sv}", detached, strict=False)
    except CorruptionError:
        return []  # GLib reads malformed serialised data as empty: no signatures in it
    return [bytes(s) for s in gvariant.vardict_lookup(entries, GPG_KEY, "aay", [])]


def global_keyrings() -> list[Path]:
    """Every *.gpg keyring in $OSTREE_GPG_HOME, else in /usr/share/ostree/trusted.gpg.d (where ostree looks),
    but GPG's own trustdb.gpg and secring.gpg."""
    folder = Path(os.environ.get("OSTREE_GPG_HOME") or GLOBAL_KEYRING_DIR)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.name.endswith(".gpg") and path.is_file()
                  and path.name not in _NOT_KEYRINGS)


def trusted_keyrings(remote_keyring: Path) -> list[Path]:
    """The remote's keyring and the global ones."""
    rings = [remote_keyring] if remote_keyring.exists() else []
    return rings + global_keyrings()


@dataclass(frozen=True)
class TrustedKeys:
    """The GPG keys a remote trusts, as ostree finds them: its own keyring (NAME.trustedkeys.gpg in the repo
    or a parent repo) or, without one, the global keyrings; and the key files or directories of key files
    of its `gpgkeypath`, read when a signature is checked."""
    keyring: Path | None = None
    key_paths: str | None = None

    @classmethod
    def of(cls, keys: Path | TrustedKeys) -> TrustedKeys:
        if isinstance(keys, TrustedKeys):
            return keys
        return cls(keys if keys.is_file() else None)

    def keyrings(self) -> list[Path]:
        return [self.keyring] if self.keyring is not None else global_keyrings()

    def key_files(self) -> list[Path]:
        """The files gpgkeypath names: each file itself, the regular files right inside each directory."""
        files: list[Path] = []
        for entry in split_key_paths(self.key_paths):
            path = Path(entry)
            if not entry:  # Path("") would be the working directory
                raise StrataError("gpgkeypath: opendir(): No such file or directory")
            if path.is_dir():
                files += sorted(child for child in path.iterdir() if child.is_file() and not child.is_symlink())
            elif path.exists():
                files.append(path)
            else:
                raise StrataError(f"gpgkeypath: opendir({entry}): No such file or directory")  # ostree's words
        return files


def split_key_paths(value: str | None) -> list[str]:
    """gpgkeypath: paths separated by ';' or by ',' (not both, as ostree requires); a trailing separator
    ends the list."""
    if not value:
        return []
    separators = [sep for sep in ";," if sep in value]
    if len(separators) > 1:
        raise StrataError("gpgkeypath: key value list contains more than one separator")
    if not separators:
        return [value]
    items = value.split(separators[0])
    return items[:-1] if items[-1] == "" else items


def verify(data: bytes, detached: bytes | None, keyring: Path | TrustedKeys, what: str) -> None:
    """At least one OpenPGP signature of data must be good and made by a valid (not expired, not revoked) key
    the remote trusts; otherwise ostree's description of each signature is the error."""
    found = signatures(detached)
    if not found:
        raise StrataError(f"{what}: no GPG signature found (GPG verification enabled, but no signatures found)")
    trusted = TrustedKeys.of(keyring)
    with tempfile.TemporaryDirectory(prefix="strata-gpgv-") as tmp:
        ring = _assemble_keyring(Path(tmp), trusted)
        statuses = _check_signatures(Path(tmp), ring, data, found)
        if any(_is_valid(status) for status in statuses):
            return
        described = "; ".join(line for status in reversed(statuses) for line in _describe_status(status, [ring])
                              if line)
    raise StrataError(f"{what}: none of {len(found)} GPG signatures is valid for the remote's keys: {described}")


def _assemble_keyring(home: Path, trusted: TrustedKeys) -> Path:
    """One keyring of everything trusted: the binary keyrings end to end (a keyring is a sequence of key
    packets), then the key files imported into it."""
    ring = home / "pubring.gpg"
    with ring.open("wb") as out:
        for path in trusted.keyrings():
            out.write(path.read_bytes())
    key_files = trusted.key_files()
    if key_files:
        from strata.image.gpgkeys import import_quietly
        import_quietly(home, ring, key_files)
    return ring


def _check_signatures(home: Path, ring: Path, data: bytes, found: list[bytes]) -> list[dict[str, list[str]]]:
    data_path = home / "data"
    data_path.write_bytes(data)
    statuses = []
    for index, signature in enumerate(found):
        sig_path = home / f"sig{index}"
        sig_path.write_bytes(signature)
        proc = subprocess.run([_tool("gpgv"), "--homedir", str(home), "--status-fd", "1", "--keyring", str(ring),
                               str(sig_path), str(data_path)], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
        statuses.append(_status_fields(proc.stdout))
    return statuses


def _status_fields(status: str) -> dict[str, list[str]]:
    return {line.split()[1]: line.split()[2:] for line in status.splitlines()
            if line.startswith("[GNUPG:] ") and len(line.split()) > 1}


def _is_valid(fields: dict[str, list[str]]) -> bool:
    """GOODSIG is gpgv's word for a good signature by a key that is neither expired nor revoked."""
    return "GOODSIG" in fields and "VALIDSIG" in fields


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
            reports.append(_describe_status(_status_fields(proc.stdout), keyrings))
    return reports


_PUBKEY_ALGOS = {"1": "RSA", "17": "DSA", "19": "ECDSA", "22": "EdDSA"}


def _describe_status(fields: dict[str, list[str]], keyrings: list[Path]) -> list[str]:
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
