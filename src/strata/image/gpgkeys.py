"""GPG keyrings of remotes: importing selected keys (`ostree remote gpg-import`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from strata.errors import StrataError


def _gpg() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise StrataError("gpg is not installed")
    return found


def import_selected(target: Path, source: Path, key_ids: list[str]) -> int:
    """Copy the keys key_ids (all keys when empty) of the keyring or key file source into the keyring target;
    returns how many keys were new to target."""
    with tempfile.TemporaryDirectory(prefix="strata-gpg-") as home:
        exported = Path(home) / "keys.gpg"
        if key_ids or _is_keyring(source):
            export = subprocess.run([_gpg(), "--homedir", home, "--batch", "--no-default-keyring", "--keyring",
                                     str(source.resolve()), "--export", *key_ids], capture_output=True, check=False)
            if export.returncode != 0 or not export.stdout:
                raise StrataError(f"exporting GPG keys {' '.join(key_ids)} from {source} failed")
            exported.write_bytes(export.stdout)
        else:
            shutil.copyfile(source, exported)
        result = subprocess.run([_gpg(), "--homedir", home, "--batch", "--no-default-keyring", "--keyring",
                                 str(target.resolve()), "--status-fd", "1", "--import", str(exported)],
                                capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StrataError(f"importing GPG keys from {source} failed")
    return _imported_count(result.stdout)


def _is_keyring(path: Path) -> bool:
    return not path.read_bytes()[:40].lstrip().startswith(b"-----BEGIN")


def _imported_count(status: str) -> int:
    """IMPORT_RES <count> <no_user_id> <imported> ...: keys that were new to the keyring."""
    for line in status.splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "IMPORT_RES"] and len(fields) > 4:
            return int(fields[4])
    return 0


def signature_key_id(signature: bytes) -> str:
    """The (long) key ID an OpenPGP signature names, as `gpg --list-packets` reports it."""
    with tempfile.TemporaryDirectory(prefix="strata-gpg-") as home:
        path = Path(home) / "sig"
        path.write_bytes(signature)
        result = subprocess.run([_gpg(), "--homedir", home, "--batch", "--list-packets", str(path)],
                                capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if ":signature packet:" in line and "keyid" in line:
            return line.rsplit("keyid", 1)[1].strip().upper()
    return ""


def same_key(key_id: str, other: str) -> bool:
    """Key IDs match when the shorter is a suffix of the longer (short, long IDs and fingerprints)."""
    a, b = key_id.upper().removeprefix("0X"), other.upper().removeprefix("0X")
    return bool(a and b) and (a.endswith(b) or b.endswith(a))
