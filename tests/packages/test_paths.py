"""Payload path rules and the tmpfiles.d lines generated for /var content, read back by the real
systemd-tmpfiles."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from strata.errors import StrataError
from strata.packages.paths import normalize_payload_path, tmpfiles_line, translate_path
from tests.conftest import require_tool

DIR = stat.S_IFDIR | 0o755
LINK = stat.S_IFLNK | 0o777


def create_with_tmpfiles(root: Path, lines: list[str]) -> None:
    conf = root / "usr/lib/tmpfiles.d/test.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("".join(line + "\n" for line in lines))
    subprocess.run([require_tool("systemd-tmpfiles"), f"--root={root}", "--create", str(conf)], check=True,
                   capture_output=True)


def entries_under(root: Path) -> dict[str, str]:
    """Relative path -> symlink target ('' for directories) of everything below root/var."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root / "var"):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            found[str(full.relative_to(root))] = os.readlink(full) if full.is_symlink() else ""
    return found


@pytest.mark.parametrize("name", ["a b", "per%cent", "%h", "tab-free ünïcode"])
def test_directory_names_read_back_exactly(tmp_path: Path, name: str) -> None:
    line = translate_path(f"/var/lib/{name}", DIR).tmpfiles
    assert line is not None
    create_with_tmpfiles(tmp_path, [line])
    assert entries_under(tmp_path) == {"var/lib": "", f"var/lib/{name}": ""}


@pytest.mark.parametrize("target", ["/t x", "line\nR! /usr - - - -", "back\\slash", "%h/x", "q\"u'o"])
def test_symlink_targets_read_back_exactly(tmp_path: Path, target: str) -> None:
    line = translate_path("/var/lib/link", LINK, target).tmpfiles
    assert line is not None and "\n" not in line
    create_with_tmpfiles(tmp_path, [line])
    assert entries_under(tmp_path) == {"var/lib": "", "var/lib/link": target}


@pytest.mark.parametrize("name", ["x\nR! /usr/share/test-scripts - - - -", "back\\slash", 'quo"te', "tab\there",
                                  "bad\udcffbyte"])
def test_unwritable_directory_names_are_refused(name: str) -> None:
    with pytest.raises(StrataError, match=r"cannot be expressed in tmpfiles\.d"):
        translate_path(f"/var/lib/{name}", DIR)


def test_owner_names_cannot_inject_fields() -> None:
    with pytest.raises(StrataError, match="invalid owner name"):
        tmpfiles_line("d", "/var/lib/x", "0755", "root\nR!", "root")
    line = tmpfiles_line("d", "/var/lib/x", "0755", "svc-user", "svc.group")
    assert line == "d /var/lib/x 0755 svc-user svc.group - -"


@pytest.mark.parametrize("path", ["/../etc/shadow", "/usr/../../x", "./usr/../..", "/usr/\0x"])
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(StrataError, match="escapes the root"):
        normalize_payload_path(path)


def test_long_names_are_refused_without_printing_them_whole() -> None:
    with pytest.raises(StrataError, match="file name too long") as info:
        normalize_payload_path("/usr/share/" + "n" * 300)
    assert len(str(info.value)) < 160
    assert normalize_payload_path("./usr/share/" + "n" * 255) == "usr/share/" + "n" * 255
