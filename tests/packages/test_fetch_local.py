"""Metadata and packages of a file:// repository are read straight from the file, with the same checks as a
download: checksum, expected size, an atomic result, one-line errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from strata.errors import CorruptionError, StrataError
from strata.packages.rpmmd import fetch_to


def test_percent_escaped_file_url_is_read_and_verified(tmp_path: Path) -> None:
    source = tmp_path / "a repo" / "primary.xml"
    source.parent.mkdir()
    source.write_bytes(b"<metadata/>")
    dest = tmp_path / "cache" / "primary.xml"
    url = f"file://{tmp_path}/a%20repo/primary.xml"
    fetch_to(url, dest, checksum=("sha256", hashlib.sha256(b"<metadata/>").hexdigest()), size=11)
    assert dest.read_bytes() == b"<metadata/>"


def test_wrong_checksum_or_size_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "primary.xml"
    source.write_bytes(b"<metadata/>")
    dest = tmp_path / "cache" / "primary.xml"
    with pytest.raises(CorruptionError):
        fetch_to(f"file://{source}", dest, size=5)
    with pytest.raises(CorruptionError):
        fetch_to(str(source), dest, checksum=("sha256", "0" * 64))
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_missing_file_and_remote_host_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match=r"^cannot fetch file://.*/absent: .*No such file"):
        fetch_to(f"file://{tmp_path}/absent", tmp_path / "out")
    with pytest.raises(StrataError, match="other hosts"):
        fetch_to("file://example.com/etc/passwd", tmp_path / "out")
    assert not (tmp_path / "out").exists()
