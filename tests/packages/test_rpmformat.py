"""Digest rules of the RPM reader, checked on packages built by rpm-rs and altered the way an attacker
would; the real rpm is the oracle for what a valid package is."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from strata.errors import CorruptionError
from strata.packages.rpmformat import SIG_SHA1, SIG_SHA256, TAG_PAYLOADDIGEST
from strata.packages.rpmread import RpmPackage
from tests.hostile import rpms as H

UNKNOWN_TAG = 999_999


def hide_tag(path: Path, header_start: int, tag: int) -> None:
    """Renumber one index entry so that readers no longer find the tag (the bytes stay where they were)."""
    data = bytearray(path.read_bytes())
    count = struct.unpack(">I", data[header_start + 8:header_start + 12])[0]
    for index in range(count):
        entry = header_start + 16 + 16 * index
        if struct.unpack(">I", data[entry:entry + 4])[0] == tag:
            data[entry:entry + 4] = struct.pack(">I", UNKNOWN_TAG)
    path.write_bytes(bytes(data))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return H.build_hostile_rpm(tmp_path / "build", "plain", files={"/usr/share/plain/README": b"plain\n"})


def rpm_checksig(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rpmkeys", "--checksig", "--nosignature", str(path)], capture_output=True, text=True,
                          check=False)


def test_valid_package_opens_and_rpm_agrees(package: Path) -> None:
    assert rpm_checksig(package).returncode == 0
    assert [item.path for item in RpmPackage.open(package).payload()] == ["/usr/share/plain/README"]


def test_package_without_header_digest_is_refused(package: Path) -> None:
    hide_tag(package, H.LEAD_SIZE, SIG_SHA256)
    hide_tag(package, H.LEAD_SIZE, SIG_SHA1)
    with pytest.raises(CorruptionError, match=r"^package plain-1-1.x86_64.rpm: no header digest$"):
        RpmPackage.open(package)


def test_package_without_payload_digest_is_refused(package: Path) -> None:
    hide_tag(package, H.layout(package.read_bytes()).header_start, TAG_PAYLOADDIGEST)
    H.reseal(package)  # the header digests now cover the altered header: only the payload is unprotected
    with pytest.raises(CorruptionError, match=r"^package plain-1-1.x86_64.rpm: no payload digest$"):
        RpmPackage.open(package)


def test_every_single_byte_change_is_caught(package: Path, tmp_path: Path) -> None:
    """Flip each byte of the main header and of the payload: none may open (rpm says the same)."""
    original = package.read_bytes()
    parts = H.layout(original)
    target = tmp_path / "flipped.rpm"
    step = max(1, (len(original) - parts.header_start) // 200)
    for position in range(parts.header_start, len(original), step):
        data = bytearray(original)
        data[position] ^= 0x01
        target.write_bytes(bytes(data))
        with pytest.raises(CorruptionError):
            RpmPackage.open(target)
        assert rpm_checksig(target).returncode != 0, position
    shutil.copy(package, target)
    RpmPackage.open(target)


def test_header_mode_wins_over_the_payload(tmp_path: Path) -> None:
    rpm = H.build_hostile_rpm(tmp_path, "modes", files={"/usr/bin/tool": b"x"}, compressed=False)
    H.set_cpio_field(rpm, "/usr/bin/tool", "mode", 0o104755)  # setuid in the payload only
    assert [oct(item.mode) for item in RpmPackage.open(rpm).payload()] == [oct(0o100644)]

