"""GPG keyrings of remotes: importing selected keys (`ostree remote gpg-import`), kept in the OpenPGP keyring
format ostree reads (not GnuPG's keybox), and replaced by rename so a crash leaves the old or the new one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from strata.errors import StrataError
from strata.image.fsutil import atomic_write, read_capped

_MAX_KEYRING = 64 << 20  # keyrings of real distributions are a few hundred KiB
_Exporter = Callable[[Path], bytes]  # given a scratch directory, the keys to import as OpenPGP packets


def _gpg() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise StrataError("gpg is not installed")
    return found


def _gpg_argv(home: Path, ring: Path) -> list[str]:
    """gpg on a private home and keyring; --no-autostart: secret keys in an input are skipped, no agent runs."""
    return [_gpg(), "--homedir", str(home), "--batch", "--no-autostart", "--no-default-keyring", "--keyring",
            str(ring)]


def _empty_keyring(home: Path) -> Path:
    """An existing empty pubring.gpg, so that gpg keeps the keyring format instead of creating a keybox."""
    ring = home / "pubring.gpg"
    ring.write_bytes(b"")
    return ring


def import_quietly(home: Path, ring: Path, key_files: list[Path]) -> None:
    """Add whatever keys key_files hold to ring; files without keys are passed over (as ostree does)."""
    subprocess.run([*_gpg_argv(home, ring), "--import", *[str(path) for path in key_files]],
                   capture_output=True, check=False, stdin=subprocess.DEVNULL)


def import_into(target: Path, sources: list[Path]) -> int:
    """Import every key of sources (keyrings or armored key files) into the keyring target; returns how many
    keys were new to it. target is replaced only when every source was imported."""
    return _merge(target, lambda home: _exported(home, sources, []))


def import_selected(target: Path, sources: list[Path], key_ids: list[str]) -> int:
    """Copy the keys key_ids (all keys when empty) of the keyrings or key files sources (the user's own GnuPG
    keyring when there are none) into the keyring target; returns how many keys were new to target."""
    if not sources:
        return _merge(target, lambda _home: _exported_from_user(key_ids))
    return _merge(target, lambda home: _exported(home, sources, key_ids))


def _merge(target: Path, export: _Exporter) -> int:
    with tempfile.TemporaryDirectory(prefix="strata-gpg-") as tmp:
        home = Path(tmp)
        keys = home / "keys.gpg"
        keys.write_bytes(export(home / "source"))
        (home / "target").mkdir(mode=0o700)
        ring = _empty_keyring(home / "target")
        if target.is_file():
            ring.write_bytes(read_capped(target, _MAX_KEYRING, "keyring"))
        result = subprocess.run([*_gpg_argv(home / "target", ring), "--status-fd", "1", "--import", str(keys)],
                                capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise StrataError(f"importing GPG keys into {target.name} failed: {_last_line(result.stderr)}")
        atomic_write(target, ring.read_bytes())
    return _imported_count(result.stdout)


def _exported(home: Path, sources: list[Path], key_ids: list[str]) -> bytes:
    """The keys key_ids (every key when empty) of sources, as binary OpenPGP packets."""
    home.mkdir(mode=0o700)
    ring = _empty_keyring(home)
    for source in sources:
        if not source.is_file():
            raise StrataError(f"{source}: No such file")
        loaded = subprocess.run([*_gpg_argv(home, ring), "--status-fd", "1", "--import", str(source)],
                                capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if _processed_count(loaded.stdout) == 0:
            raise StrataError(f"no GPG keys could be read from {source}: {_last_line(loaded.stderr)}")
    return _export(_gpg_argv(home, ring), key_ids)


def _exported_from_user(key_ids: list[str]) -> bytes:
    return _export([_gpg(), "--batch", "--no-autostart"], key_ids)


def _export(argv: list[str], key_ids: list[str]) -> bytes:
    for key_id in key_ids:  # ostree names the key it cannot find
        probe = subprocess.run([*argv, "--list-keys", key_id], capture_output=True, check=False,
                               stdin=subprocess.DEVNULL)
        if probe.returncode != 0:
            raise StrataError(f"Unable to find key \"{key_id}\"")
    export = subprocess.run([*argv, "--export", *key_ids], capture_output=True, check=False,
                            stdin=subprocess.DEVNULL)
    if export.returncode != 0:
        raise StrataError(f"exporting GPG keys failed: {_last_line(export.stderr.decode(errors='replace'))}")
    return export.stdout




def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def _imported_count(status: str) -> int:
    """IMPORT_RES <count> <no_user_id> <imported> ...: keys that were new to the keyring."""
    return _import_result(status, 2)


def _processed_count(status: str) -> int:
    return _import_result(status, 0)


def _import_result(status: str, index: int) -> int:
    for line in status.splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "IMPORT_RES"] and len(fields) > 2 + index:
            return int(fields[2 + index])
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
