"""A remote's own GPG keys beside the real ostree: `remote gpg-import` (from keyrings, key IDs, stdin), the
REPO/NAME.trustedkeys.gpg each tool writes being one the other reads, gpgkeypath files and directories, and
keys that expired or were revoked after they signed. Both tools must count, accept and refuse alike."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool

REF = "strata/test/x86_64"
TOOLS = ("ostree", "strata")


def run(tool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    command = [require_tool("ostree")] if tool == "ostree" else [sys.executable, "-m", "strata.cli.ostree"]
    env = {key: value for key, value in os.environ.items() if key != "OSTREE_GPG_HOME"}
    proc = subprocess.run([*command, *args], capture_output=True, check=False, input=stdin, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def ok(tool: str, *args: str, stdin: bytes | None = None) -> str:
    proc = run(tool, *args, stdin=stdin)
    assert proc.returncode == 0, (tool, args, proc.stderr)
    return proc.stdout


def gpg(home: Path, *args: str) -> bytes:
    return subprocess.run([require_tool("gpg"), "--homedir", str(home), "--batch", *args], capture_output=True,
                          check=True).stdout


@dataclass(frozen=True)
class Keys:
    home: Path
    ids: tuple[str, ...]
    fingerprints: tuple[str, ...]
    keyring: Path  # every public key, binary
    armored: tuple[Path, ...]  # one armored file per key


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """Three signing keys in one GnuPG home, made as of 2020 so that one can be expired in the past later."""
    home = tmp_path / "gpghome"
    home.mkdir(mode=0o700)
    for name in ("one", "two", "three"):
        gpg(home, "--passphrase", "", "--faked-system-time", "20200101T000000!", "--quick-gen-key",
            f"{name} <{name}@example.invalid>", "ed25519", "sign", "never")
    listing = gpg(home, "--with-colons", "--list-keys").decode().splitlines()
    fingerprints = tuple(line.split(":")[9] for line in listing if line.startswith("fpr:"))
    keyring = tmp_path / "all.gpg"
    keyring.write_bytes(gpg(home, "--export"))
    armored = []
    for index, fingerprint in enumerate(fingerprints):
        path = tmp_path / f"key{index + 1}.asc"
        path.write_bytes(gpg(home, "--armor", "--export", fingerprint))
        armored.append(path)
    return Keys(home, tuple(f[-16:] for f in fingerprints), fingerprints, keyring, tuple(armored))


@pytest.fixture
def server(tmp_path: Path, keys: Keys, nginx: Callable[[Path], str]) -> tuple[Path, str]:
    repo = tmp_path / "www" / "repo"
    repo.mkdir(parents=True)
    ok("ostree", f"--repo={repo}", "init", "--mode=archive")
    return repo, nginx(tmp_path / "www") + "/repo"


def sign_new_commit(repo: Path, tree: Path, keys: Keys, index: int, ref: str = REF) -> None:
    tree.mkdir(exist_ok=True)
    (tree / "file").write_text(f"signed by key {index}\n")
    ok("ostree", f"--repo={repo}", "commit", "-b", ref, f"--gpg-sign={keys.ids[index]}",
       f"--gpg-homedir={keys.home}", f"--tree=dir={tree}")


def client(path: Path, url: str, *remote_options: str, name: str = "origin") -> Path:
    if not path.exists():
        ok("ostree", f"--repo={path}", "init", "--mode=archive")
    ok("ostree", f"--repo={path}", "remote", "add", *remote_options, name, url)
    return path


def test_gpg_import_counts_as_ostree(tmp_path: Path, keys: Keys, server: tuple[Path, str]) -> None:
    _repo, url = server
    said: dict[str, list[str]] = {}
    for tool in TOOLS:
        repo = client(tmp_path / tool, url)
        steps = [("--keyring", str(keys.keyring), "origin", keys.ids[0]),
                 ("--keyring", str(keys.keyring), "origin", keys.ids[1], keys.ids[2]),
                 ("--keyring", str(keys.keyring), "origin", keys.ids[0], keys.ids[2])]
        said[tool] = [ok(tool, f"--repo={repo}", "remote", "gpg-import", *step) for step in steps]
        client(repo, url, name="fromstdin")
        stdin = b"".join(path.read_bytes() for path in keys.armored)
        said[tool].append(ok(tool, f"--repo={repo}", "remote", "gpg-import", "--stdin", "fromstdin", stdin=stdin))
        assert (repo / "origin.trustedkeys.gpg").is_file()
        ok(tool, f"--repo={repo}", "remote", "delete", "origin")
        assert not (repo / "origin.trustedkeys.gpg").exists()
    assert said["strata"] == said["ostree"] == ['Imported 1 GPG key to remote "origin"\n',
                                                'Imported 2 GPG keys to remote "origin"\n',
                                                'Imported 0 GPG keys to remote "origin"\n',
                                                'Imported 3 GPG keys to remote "fromstdin"\n']


def test_each_tool_reads_the_keyring_the_other_wrote(tmp_path: Path, keys: Keys, server: tuple[Path, str]) -> None:
    repo, url = server
    sign_new_commit(repo, tmp_path / "tree", keys, 0)
    for writer, reader in (("ostree", "strata"), ("strata", "ostree")):
        path = client(tmp_path / f"{writer}-wrote", url)
        ok(writer, f"--repo={path}", "remote", "gpg-import", "--keyring", str(keys.keyring), "origin", keys.ids[0])
        ok(reader, f"--repo={path}", "pull", "origin", REF)
        other = client(tmp_path / f"{writer}-wrote-other", url)
        ok(writer, f"--repo={other}", "remote", "gpg-import", "--keyring", str(keys.keyring), "origin", keys.ids[1])
        refused = run(reader, f"--repo={other}", "pull", "origin", REF)
        assert refused.returncode != 0 and "public key not found" in refused.stderr, (reader, refused.stderr)


@pytest.mark.parametrize(("paths", "accepted", "words"), [
    (lambda k: str(k.armored[2]), True, ""),
    (lambda k: f"{k.armored[0]},{k.armored[1]},{k.armored[2]}", True, ""),
    (lambda k: f"{k.armored[0]};{k.armored[2]};", True, ""),
    (lambda k: f"{k.armored[0]},{k.armored[1]}", False, "public key not found"),
    (lambda k: str(k.armored[0].parent / "keydir"), True, ""),
    (lambda k: str(k.armored[0].parent / "nodir") + "/", False, "No such file or directory"),
    (lambda k: f",{k.armored[2]}", False, "No such file or directory"),
    (lambda k: f"{k.armored[0]},{k.armored[1]};{k.armored[2]}", False, "more than one separator"),
])
def test_gpgkeypath_as_ostree(tmp_path: Path, keys: Keys, server: tuple[Path, str], paths: Callable[[Keys], str],
                              accepted: bool, words: str) -> None:
    repo, url = server
    sign_new_commit(repo, tmp_path / "tree", keys, 2)
    (tmp_path / "keydir").mkdir()
    (tmp_path / "keydir" / "key3.asc").write_bytes(keys.armored[2].read_bytes())
    (tmp_path / "keydir" / "notes.txt").write_text("not a key\n")
    for tool in TOOLS:
        path = client(tmp_path / tool, url, f"--set=gpgkeypath={paths(keys)}")
        proc = run(tool, f"--repo={path}", "pull", "origin", REF)
        assert (proc.returncode == 0) is accepted and words in proc.stderr, (tool, proc.stderr)


def test_keys_expired_or_revoked_after_signing_are_refused(tmp_path: Path, keys: Keys,
                                                           server: tuple[Path, str]) -> None:
    repo, url = server
    sign_new_commit(repo, tmp_path / "tree", keys, 0, f"{REF}-one")
    sign_new_commit(repo, tmp_path / "tree", keys, 1, f"{REF}-two")
    for tool in TOOLS:
        client(tmp_path / tool, url, f"--gpg-import={keys.armored[0]}", name="one")
        client(tmp_path / tool, url, f"--gpg-import={keys.armored[1]}", name="two")
    gpg(keys.home, "--faked-system-time", "20200601T000000!", "--quick-set-expire", keys.fingerprints[0], "1d")
    expired = tmp_path / "expired.asc"
    expired.write_bytes(gpg(keys.home, "--armor", "--export", keys.fingerprints[0]))
    certificate = keys.home / "openpgp-revocs.d" / f"{keys.fingerprints[1]}.rev"
    gpg(keys.home, "--import", str(_usable_revocation(certificate, tmp_path / "two.rev")))
    revoked = tmp_path / "revoked.asc"
    revoked.write_bytes(gpg(keys.home, "--armor", "--export", keys.fingerprints[1]))
    for tool in TOOLS:
        path = tmp_path / tool
        assert ok(tool, f"--repo={path}", "remote", "gpg-import", "--keyring", str(expired), "one") == \
            'Imported 0 GPG keys to remote "one"\n'
        assert ok(tool, f"--repo={path}", "remote", "gpg-import", "--keyring", str(revoked), "two") == \
            'Imported 0 GPG keys to remote "two"\n'
        refused = run(tool, f"--repo={path}", "pull", "one", f"{REF}-one")
        assert refused.returncode != 0 and "Key expired" in refused.stderr, (tool, refused.stderr)
        refused = run(tool, f"--repo={path}", "pull", "two", f"{REF}-two")
        assert refused.returncode != 0 and "Key revoked" in refused.stderr, (tool, refused.stderr)
        assert run(tool, f"--repo={path}", "refs").stdout == "", tool


def _usable_revocation(certificate: Path, target: Path) -> Path:
    """gpg keeps its automatic revocation certificate disarmed by a ':' before the armor line."""
    target.write_text(certificate.read_text().replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                                                      "-----BEGIN PGP PUBLIC KEY BLOCK-----"))
    return target


def test_remote_add_force_keeps_keys_and_refuses_bad_spec_first(tmp_path: Path, keys: Keys) -> None:
    for tool in TOOLS:
        repo = client(tmp_path / tool, "http://example.invalid/one", f"--gpg-import={keys.armored[0]}")
        ok(tool, f"--repo={repo}", "remote", "add", "--force", "origin", "http://example.invalid/two")
        assert (repo / "origin.trustedkeys.gpg").is_file(), tool
        bad = run(tool, f"--repo={repo}", "remote", "add", "--force", "--sign-verify=dummy", "origin", "http://x")
        assert bad.returncode != 0 and "Failed to parse KEYTYPE" in bad.stderr, tool
        assert ok(tool, f"--repo={repo}", "remote", "show-url", "origin") == "http://example.invalid/two\n", tool
