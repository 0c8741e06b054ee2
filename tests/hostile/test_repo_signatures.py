"""gpgcheck and repo_gpgcheck against keys named by the .repo file, with packages signed by the real
rpmsign and repomd.xml signed by gpg; composed by the real CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata.image.repo import Repo
from tests.hostile import rpms as H
from tests.hostile.test_rpm_compose import assert_refused, compose_packages

KERNEL = "/usr/lib/modules/6.1.0-1.hostile.x86_64"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[H.GpgKey, H.GpgKey]]:
    base = tmp_path_factory.mktemp("gpg")
    trusted = H.make_gpg_key(base / "trusted", "trusted repo key <trusted@example.invalid>")
    other = H.make_gpg_key(base / "other", "someone else <other@example.invalid>")
    yield trusted, other
    trusted.stop()
    other.stop()


def bootable(tmp: Path) -> Path:
    """A package that composes on its own (a compose needs a kernel and an initramfs)."""
    return H.build_hostile_rpm(tmp / "build", "bootable", files={f"{KERNEL}/vmlinuz": b"kernel",
                                                                  f"{KERNEL}/initramfs.img": b"initramfs"})


def signed_repo(tmp: Path, rpm: Path, key: H.GpgKey | None, *, repomd_key: H.GpgKey | None = None) -> Path:
    if key is not None:
        H.sign_rpm(rpm, key)
    published = H.make_repo(tmp / "published", [rpm])
    if repomd_key is not None:
        H.sign_repomd(published, repomd_key)
    return published


def compose_with(tmp: Path, published: Path, trusted: H.GpgKey | None, *, gpgcheck: bool = False,
                 repo_gpgcheck: bool = False) -> tuple[subprocess.CompletedProcess[str], Repo]:
    keys = [f"file://{trusted.public_key}"] if trusted is not None else []

    def repo_file(treedir: Path) -> Path:
        return H.write_repo_file(treedir / "hostile.repo", "hostile", published, gpgkey=keys, gpgcheck=gpgcheck,
                                 repo_gpgcheck=repo_gpgcheck)

    return compose_packages(tmp, [], ["bootable"], repo_file)


def test_signed_package_composes(tmp_path: Path, keys: tuple[H.GpgKey, H.GpgKey]) -> None:
    trusted, _other = keys
    published = signed_repo(tmp_path, bootable(tmp_path), trusted)
    proc, repo = compose_with(tmp_path, published, trusted, gpgcheck=True)
    assert proc.returncode == 0, proc.stderr
    assert repo.read_ref("hostile/x86_64") is not None


@pytest.mark.parametrize(("signer", "message"), [
    (None, "package bootable-1-1.x86_64: is not signed (repository 'hostile' has gpgcheck=1)"),
    ("other", "package bootable-1-1.x86_64: signature is not OK (NOKEY)"),
])
def test_unsigned_or_foreign_signed_package_is_refused(tmp_path: Path, keys: tuple[H.GpgKey, H.GpgKey],
                                                      signer: str | None, message: str) -> None:
    trusted, other = keys
    published = signed_repo(tmp_path, bootable(tmp_path), other if signer else None)
    proc, repo = compose_with(tmp_path, published, trusted, gpgcheck=True)
    assert_refused(proc, repo, message)
    assert list((tmp_path / "cache" / "downloads").glob("*.rpm")) == []


def test_resealed_payload_breaks_the_signature(tmp_path: Path, keys: tuple[H.GpgKey, H.GpgKey]) -> None:
    trusted, _other = keys
    rpm = bootable(tmp_path)
    H.sign_rpm(rpm, trusted)
    H.corrupt_payload(rpm)
    H.reseal(rpm)  # digests fixed up by the attacker: only the signature can tell
    published = signed_repo(tmp_path, rpm, None)
    proc, repo = compose_with(tmp_path, published, trusted, gpgcheck=True)
    assert_refused(proc, repo, "package bootable-1-1.x86_64: signature is not OK (BAD)")


def test_gpgcheck_without_keys_is_refused(tmp_path: Path, keys: tuple[H.GpgKey, H.GpgKey]) -> None:
    published = signed_repo(tmp_path, bootable(tmp_path), keys[0])
    proc, repo = compose_with(tmp_path, published, None, gpgcheck=True)
    assert_refused(proc, repo, "repository 'hostile': gpgcheck is enabled but no gpgkey is configured")


def test_signed_repomd_is_accepted(tmp_path: Path, keys: tuple[H.GpgKey, H.GpgKey]) -> None:
    trusted, _other = keys
    published = signed_repo(tmp_path, bootable(tmp_path), None, repomd_key=trusted)
    proc, _repo = compose_with(tmp_path, published, trusted, repo_gpgcheck=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("signer", "message"), [
    (None, "repository 'hostile': repomd.xml is not signed (repo_gpgcheck=1; repomd.xml.asc: cannot fetch"),
    ("other", "repository 'hostile': repomd.xml: signature is not OK"),
    ("tampered", "repository 'hostile': repomd.xml: signature is not OK"),
])
def test_unsigned_or_foreign_signed_repomd_is_refused(tmp_path: Path, keys: tuple[H.GpgKey, H.GpgKey],
                                                     signer: str | None, message: str) -> None:
    trusted, other = keys
    published = signed_repo(tmp_path, bootable(tmp_path), None,
                            repomd_key={"other": other, "tampered": trusted}.get(signer or ""))
    if signer == "tampered":
        repomd = published / "repodata" / "repomd.xml"
        repomd.write_text(repomd.read_text().replace("<revision>", "<revision>1"))
    proc, repo = compose_with(tmp_path, published, trusted, repo_gpgcheck=True)
    assert_refused(proc, repo, message)
