"""Hostile `.repo` files and rpm-md metadata, composed by the real CLI: one-line refusals, no file written
or deleted outside the metadata cache, no ref moved."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile import rpms as H
from tests.hostile.test_rpm_compose import assert_refused, compose_packages

VICTIM_FILES = {"keep-me": b"precious\n", "primary.xml.gz": b"not metadata\n"}


def victim_dir(base: Path) -> Path:
    victim = base / "victim"
    victim.mkdir(parents=True)
    for name, data in VICTIM_FILES.items():
        (victim / name).write_bytes(data)
    return victim


def assert_victim_untouched(victim: Path) -> None:
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == VICTIM_FILES


def harmless(tmp: Path) -> Path:
    return H.build_hostile_rpm(tmp / "build", "harmless", files={"/usr/share/harmless/README": b"hi\n"})


@pytest.mark.parametrize("section", ["VICTIM", "../../victim", "a/b", "..", "spa ce", "ü"])
def test_repo_ids_are_plain_names(tmp_path: Path, section: str) -> None:
    victim = victim_dir(tmp_path / "host")
    section = section.replace("VICTIM", str(victim))

    def repo_file(treedir: Path) -> Path:
        return H.write_repo_file(treedir / "evil.repo", section, tmp_path / "published")

    proc, repo = compose_packages(tmp_path, [harmless(tmp_path)], ["harmless"], repo_file)
    assert_refused(proc, repo, "evil.repo: invalid repository id [")
    assert_victim_untouched(victim)


@pytest.mark.parametrize(("extra", "message"), [
    ({"metadata_expire": "abc"}, "evil.repo: repository 'hostile': metadata_expire=abc is not a duration"),
    ({"metadata_expire": "6x"}, "metadata_expire=6x is not a duration"),
    ({"enabled": "maybe"}, "evil.repo: repository 'hostile': enabled=maybe is not a boolean"),
    ({"gpgcheck": "2"}, "gpgcheck=2 is not a boolean"),
])
def test_bad_values_name_the_key(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    def repo_file(treedir: Path) -> Path:
        path = H.write_repo_file(treedir / "evil.repo", "hostile", tmp_path / "published")
        text = path.read_text()
        for key, value in extra.items():
            text = re.sub(rf"^{key}=.*$", "", text, flags=re.M) + f"{key}={value}\n"
        path.write_text(text)
        return path

    proc, repo = compose_packages(tmp_path, [harmless(tmp_path)], ["harmless"], repo_file)
    assert_refused(proc, repo, message)


@pytest.mark.parametrize("value", ["6h", "2d", "-1", "never", "90", "30m"])
def test_dnf_duration_forms_are_accepted(tmp_path: Path, value: str) -> None:
    from strata.packages.rpmmd import parse_repo_files
    H.write_repo_file(tmp_path / "ok.repo", "ok", tmp_path, extra={"metadata_expire": value})
    text = (tmp_path / "ok.repo").read_text().replace("metadata_expire=0\n", "")
    (tmp_path / "ok.repo").write_text(text)
    expected = {"6h": 21600, "2d": 172800, "-1": -1, "never": -1, "90": 90, "30m": 1800}[value]
    assert [r.metadata_expire for r in parse_repo_files(tmp_path)] == [expected]


def test_binary_repo_file(tmp_path: Path) -> None:
    def repo_file(treedir: Path) -> Path:
        path = treedir / "evil.repo"
        path.write_bytes(bytes(range(256)) * 4)
        return path

    proc, repo = compose_packages(tmp_path, [harmless(tmp_path)], ["harmless"], repo_file)
    assert_refused(proc, repo, "evil.repo: not a text file (invalid UTF-8 at byte 128)")


def _rewrite_repomd(repo: Path, old: str, new: str) -> None:
    repomd = repo / "repodata/repomd.xml"
    repomd.write_text(repomd.read_text().replace(old, new))


def test_metadata_href_cannot_leave_the_cache(tmp_path: Path) -> None:
    victim = victim_dir(tmp_path / "host")
    published = H.make_repo(tmp_path / "pre", [harmless(tmp_path)])
    primary = next((published / "repodata").glob("*-primary.xml.gz"))
    _rewrite_repomd(published, f"repodata/{primary.name}", "repodata/..")

    def repo_file(treedir: Path) -> Path:
        return H.write_repo_file(treedir / "evil.repo", "hostile", published)

    proc, repo = compose_packages(tmp_path, [], ["harmless"], repo_file)
    assert_refused(proc, repo, "repository 'hostile' metadata file: unusable file name '..'")
    assert_victim_untouched(victim)


def replace_primary(repo: Path, edit: Callable[[str], str]) -> None:
    """Rewrite primary.xml and point repomd.xml at the new file with its new checksum and size."""
    primary = next((repo / "repodata").glob("*-primary.xml.gz"))
    old_gz = primary.read_bytes()
    new_gz = gzip.compress(edit(gzip.decompress(old_gz).decode()).encode())
    primary.unlink()
    (repo / "repodata" / f"{hashlib.sha256(new_gz).hexdigest()}-primary.xml.gz").write_bytes(new_gz)
    repomd = repo / "repodata/repomd.xml"
    text = repomd.read_text()
    text = text.replace(hashlib.sha256(old_gz).hexdigest(), hashlib.sha256(new_gz).hexdigest())
    text = text.replace(f"<size>{len(old_gz)}</size>", f"<size>{len(new_gz)}</size>")
    repomd.write_text(text)


@pytest.mark.parametrize(("location", "message"), [
    ("Packages/..", "repository 'hostile' package file: unusable file name '..'"),
    ("../host/victim/keep-me", "package keep-me from 'hostile': "),  # fetched (read), but stored under its name only
])
def test_package_location_cannot_leave_the_download_dir(tmp_path: Path, location: str, message: str) -> None:
    victim = victim_dir(tmp_path / "host")
    published = H.make_repo(tmp_path / "pre", [harmless(tmp_path)])
    replace_primary(published, lambda xml: re.sub(r'<location href="[^"]*"', f'<location href="{location}"', xml))

    def repo_file(treedir: Path) -> Path:
        return H.write_repo_file(treedir / "evil.repo", "hostile", published)

    proc, repo = compose_packages(tmp_path, [], ["harmless"], repo_file)
    assert_refused(proc, repo, message)
    assert_victim_untouched(victim)


def test_endless_repomd_is_cut_off(tmp_path: Path) -> None:
    from strata.packages.rpmmd import MAX_REPOMD_SIZE
    published = H.make_repo(tmp_path / "pre", [harmless(tmp_path)])
    repomd = published / "repodata/repomd.xml"
    with repomd.open("ab") as f:
        f.write(b" " * (MAX_REPOMD_SIZE + 1))

    def repo_file(treedir: Path) -> Path:
        return H.write_repo_file(treedir / "evil.repo", "hostile", published)

    proc, repo = compose_packages(tmp_path, [], ["harmless"], repo_file)
    assert_refused(proc, repo, f"repodata/repomd.xml: larger than {MAX_REPOMD_SIZE:,} bytes")
    assert not list((tmp_path / "cache").rglob("*.part"))


@pytest.mark.parametrize(("make", "message"), [
    (lambda path, secret: path.symlink_to("/dev/zero"), "a symlink out of"),
    (lambda path, secret: path.symlink_to(secret), "a symlink out of"),
    (lambda path, secret: os.mkfifo(path), "not a regular file"),
    (lambda path, secret: path.write_text(secret.read_text()), "line 1: no [section] before the first option"),
    (lambda path, secret: path.write_text("[ok]\nsecret-hash\n"), "line 2: not a [section] or key=value"),
])
def test_repo_file_cannot_read_or_show_host_files(tmp_path: Path, make: Callable[[Path, Path], None],
                                                 message: str) -> None:
    secret = tmp_path / "host" / "shadow"
    secret.parent.mkdir()
    secret.write_text("  root:$6$secret-hash:19000:0:99999:7:::\n")

    def repo_file(treedir: Path) -> Path:
        path = treedir / "evil.repo"
        make(path, secret)
        return path

    proc, repo = compose_packages(tmp_path, [harmless(tmp_path)], ["harmless"], repo_file)
    assert_refused(proc, repo, message)
    assert "secret-hash" not in proc.stderr
