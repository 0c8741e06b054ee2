"""Hostile RPMs in a repository, composed by the real CLI (`strata compose tree`): each is refused with a
one-line error, nothing is written outside the target and no ref moves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from strata.image.repo import Repo, RepoMode
from tests.hostile import rpms as H

REF = "hostile/x86_64"
HOST_ESCAPE = Path("/tmp/strata-hostile-escape")


def strata(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.main", *args], capture_output=True, text=True,
                          check=False)


def compose_packages(tmp: Path, rpms: list[Path], packages: list[str], repo_file: Callable[[Path], Path] | None = None
                     ) -> tuple[subprocess.CompletedProcess[str], Repo]:
    """Publish rpms (if any) as an rpm-md repository in tmp/published, write the .repo file (by default one
    for tmp/published), a treefile naming packages, and compose it."""
    published = H.make_repo(tmp / "published", rpms) if rpms else tmp / "published"
    treedir = tmp / "treefile"
    treedir.mkdir()
    if repo_file is None:
        H.write_repo_file(treedir / "hostile.repo", "hostile", published)
    else:
        repo_file(treedir)
    (treedir / "t.json").write_text(json.dumps({"ref": REF, "repos": ["hostile"], "packages": packages,
                                                "recommends": False}))
    repo = Repo.init(tmp / "repo", RepoMode.ARCHIVE)
    proc = strata("compose", "tree", "--repo", str(tmp / "repo"), "--cachedir", str(tmp / "cache"),
                  str(treedir / "t.json"))
    return proc, repo


def assert_refused(proc: subprocess.CompletedProcess[str], repo: Repo, message: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert Repo.open(repo.path).list_refs() == {}
    assert not HOST_ESCAPE.exists()


def evil(tmp: Path, **fields: object) -> Path:
    return H.build_hostile_rpm(tmp / "build", "evil", compressed=False, **fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_host_escape() -> None:
    shutil.rmtree(HOST_ESCAPE, ignore_errors=True)
    HOST_ESCAPE.unlink(missing_ok=True)


@pytest.mark.parametrize("path", H.TRAVERSAL_PATHS)
def test_path_traversal_is_refused(tmp_path: Path, path: str) -> None:
    proc, repo = compose_packages(tmp_path, [evil(tmp_path, files={path: b"owned\n"})], ["evil"])
    assert_refused(proc, repo, "package evil: payload path escapes the root: ")


def test_long_file_name_is_named_as_such(tmp_path: Path) -> None:
    proc, repo = compose_packages(tmp_path, [evil(tmp_path, files={H.LONG_NAME: b"x"})], ["evil"])
    assert_refused(proc, repo, "package evil: file name too long: /usr/share/nnnn")
    assert len(proc.stderr) < 300


def test_tmpfiles_injection_is_refused(tmp_path: Path) -> None:
    proc, repo = compose_packages(tmp_path, [evil(tmp_path, dirs=[H.TMPFILES_INJECTION_DIR])], ["evil"])
    assert_refused(proc, repo, r"package evil: path cannot be expressed in tmpfiles.d: /var/lib/x\nR! ")


def test_write_through_a_packaged_symlink_is_refused(tmp_path: Path) -> None:
    # A directory of this test's own, outside the compose root: the fixed HOST_ESCAPE path must stay absent,
    # since tests in other workers assert that it does not exist.
    outside = tmp_path / "outside"
    outside.mkdir()
    rpm = evil(tmp_path, symlinks={"/usr/share/evil": str(outside)}, files={"/usr/share/evil/x": b"x"})
    proc, repo = compose_packages(tmp_path, [rpm], ["evil"])
    assert proc.returncode != 0 and "is not a directory" in proc.stderr, proc.stderr
    assert list(outside.iterdir()) == []
    assert Repo.open(repo.path).list_refs() == {}


@pytest.mark.parametrize(("tamper", "message"), [
    (H.corrupt_header, "package evil-1-1.x86_64.rpm: header digest mismatch"),
    (lambda p: H.corrupt_payload(p, b"genuine", b"TAMPERD"), "package evil-1-1.x86_64.rpm: payload digest mismatch"),
    (lambda p: H.truncate(p, -7), "package evil-1-1.x86_64.rpm: payload digest mismatch"),
    (lambda p: H.declare_file_size(p, 1 << 31), "package evil: payload file size differs from the header's"),
    (lambda p: H.declare_cpio_size(p, "/usr/bin/evil", 0x7FFFFFFF), "package evil: corrupt payload"),
])
def test_tampered_packages_are_refused(tmp_path: Path, tamper: Callable[[Path], None], message: str) -> None:
    rpm = evil(tmp_path, files={"/usr/bin/evil": b"genuine"})
    tamper(rpm)
    proc, repo = compose_packages(tmp_path, [rpm], ["evil"])
    assert_refused(proc, repo, message)


def test_symlink_target_with_newline_stays_one_tmpfiles_line(tmp_path: Path) -> None:
    kernel = "/usr/lib/modules/6.1.0-1.hostile.x86_64"  # a compose needs one
    rpm = evil(tmp_path, symlinks={"/var/lib/evil-link": "x\nR! /usr - - - -"},
               files={"/usr/bin/evil": b"x", f"{kernel}/vmlinuz": b"kernel", f"{kernel}/initramfs.img": b"initrd"},
               modes={"/usr/bin/evil": 0o4755})
    proc, repo = compose_packages(tmp_path, [rpm], ["evil"])
    assert proc.returncode == 0, proc.stderr
    conf = subprocess.run(["ostree", f"--repo={repo.path}", "cat", REF, "/usr/lib/rpm-ostree/tmpfiles.d/evil.conf"],
                          capture_output=True, text=True, check=True).stdout
    expected = r"L /var/lib/evil-link - - - - x\x0aR!\x20/usr\x20-\x20-\x20-\x20-"
    assert [line for line in conf.splitlines() if line.startswith("L ")] == [expected]
    assert not any(line.startswith("R") for line in conf.splitlines())
    listing = subprocess.run(["ostree", f"--repo={repo.path}", "ls", REF, "/usr/bin/evil"], capture_output=True,
                             text=True, check=True).stdout
    assert listing.startswith("-04755 0 0 "), listing  # setuid kept, owned by root, inside the tree only
