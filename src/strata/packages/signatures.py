"""OpenPGP checks of what repositories serve, against the keys a `.repo` file names (`gpgkey=`):
package signatures through the real rpm (`rpmkeys --checksig` on a private key database, never the host's
rpmdb), and repomd.xml's detached signature through gpgv."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from strata.errors import CorruptionError, InvalidInputError, StrataError
from strata.image import gpg
from strata.packages.text import shown

KEY_URL_SCHEMES = ("file", "http", "https")
_C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StrataError(f"{name} is not installed; it is needed to check package signatures")
    return found


def check_key_url(url: str, repo_id: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in KEY_URL_SCHEMES:
        raise InvalidInputError(f"repository '{repo_id}': gpgkey {shown(url)} is not a file://, http:// or "
                                "https:// URL")
    return url


class PackageKeyring:
    """The keys of one repository in a private rpm key database under workdir."""

    def __init__(self, repo_id: str, key_files: list[Path], workdir: Path) -> None:
        if not key_files:
            raise InvalidInputError(f"repository '{repo_id}': gpgcheck is enabled but no gpgkey is configured")
        self.repo_id = repo_id
        self.dbpath = workdir / "rpmkeys-db"
        self.dbpath.mkdir(parents=True, exist_ok=True)
        for key in key_files:
            proc = self._rpmkeys("--import", str(key))
            if proc.returncode != 0:
                raise InvalidInputError(f"repository '{repo_id}': cannot import gpgkey {key.name}: "
                                        f"{shown(_last_line(proc.stderr))}")

    def _rpmkeys(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_tool("rpmkeys"), "--dbpath", str(self.dbpath), *args], capture_output=True,
                              text=True, check=False, stdin=subprocess.DEVNULL, env={**os.environ, **_C_LOCALE})

    def verify(self, rpm: Path, name: str) -> None:
        """Refuse the package unless it carries a signature that rpm verifies against these keys."""
        proc = self._rpmkeys("--checksig", "--verbose", str(rpm))
        statuses = [line.strip() for line in proc.stdout.splitlines() if "Signature" in line]
        if not statuses:
            raise CorruptionError(f"package {name}: is not signed (repository '{self.repo_id}' has gpgcheck=1)")
        bad = [s for s in statuses if not s.endswith(": OK")]
        if bad or proc.returncode != 0:
            reason = bad[0].rsplit(":", 1)[-1].strip() if bad else "verification failed"
            raise CorruptionError(f"package {name}: signature is not OK ({shown(reason)})")


def verify_detached(data_file: Path, signature_file: Path, key_files: list[Path], workdir: Path, what: str) -> None:
    """Check an armored or binary detached signature of data_file with gpgv against key_files."""
    if not key_files:
        raise InvalidInputError(f"{what}: signature checking is enabled but no gpgkey is configured")
    keyring = workdir / "keyring.gpg"
    for key in key_files:
        gpg.import_keys(keyring, key)
    proc = subprocess.run([_tool("gpgv"), "--homedir", str(workdir), "--keyring", str(keyring),
                           str(signature_file), str(data_file)], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, **_C_LOCALE})
    if proc.returncode != 0:
        raise CorruptionError(f"{what}: signature is not OK ({shown(_last_line(proc.stderr))})")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"
