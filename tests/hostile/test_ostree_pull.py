"""A mirror turned hostile: every malformed or lying object is refused by `strata repo pull` with one line,
the client's ref stays where it was, its repository stays fsck-clean for strata and the real ostree, and
nothing outside it is written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strata.image.repo import Repo
from strata.image.sign import generate_keypair
from tests.conftest import run_ostree
from tests.hostile import ostree_repos as H
from tests.image.helpers import strata
from tests.pull.nginx import start_nginx, stop_nginx

Builder = Callable[[Repo], str]


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One nginx for the module: (served directory, its URL); each test adds a repository under it."""
    root = tmp_path_factory.mktemp("www")
    url, pid_file = start_nginx(root, tmp_path_factory.mktemp("nginx"))
    yield root, url
    stop_nginx(pid_file)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Everything below root: file contents, symlink targets, directory names."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = f"-> {path.readlink()}" if path.is_symlink() else ("dir" if path.is_dir() else path.read_bytes())
    return found


@dataclass
class Mirror:
    """A server repository with a benign commit on REF and a client that pulled it."""

    server: Repo
    client: Path
    good: str
    host: Path  # a host directory that must never change

    def pull(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return strata("repo", "pull", "--repo", str(self.client), *extra, "origin", H.REF, check=False)

    def assert_untouched(self, host_before: dict[str, bytes | str]) -> None:
        assert Repo.open(self.client).read_ref(H.REF, remote="origin") == self.good
        assert "no errors found" in strata("repo", "fsck", "--repo", str(self.client)).stdout
        ostree = run_ostree(f"--repo={self.client}", "fsck", check=False)
        assert ostree.returncode == 0, ostree.stderr
        assert snapshot(self.host) == host_before


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def host_dir(tmp_path: Path) -> Path:
    host = tmp_path / "host"
    host.mkdir()
    (host / "victim").write_text("original\n")
    return host


def mirror(www: tuple[Path, str], tmp_path: Path, *remote_options: str) -> Mirror:
    root, url = www
    name = tmp_path.name
    server = H.new_server_repo(root / name)
    good = H.benign(server)
    client = tmp_path / "client"
    strata("repo", "init", "--repo", str(client), "--mode", "bare-user")
    options = remote_options or ("--no-gpg-verify",)
    strata("repo", "remote", "add", "--repo", str(client), *options, "origin", f"{url}/{name}")
    mirrored = Mirror(server, client, good, host_dir(tmp_path))
    if not remote_options:
        strata("repo", "pull", "--repo", str(client), "origin", H.REF)
    else:  # a verifying client: the benign commit is pulled unverified, by a copy from the server
        strata("repo", "pull-local", "--repo", str(client), "--remote", "origin", str(server.path), H.REF)
    return mirrored


MALFORMED: dict[str, tuple[Builder, str]] = {
    "duplicate file": (H.duplicate_file, "duplicate name 'a'"),
    "duplicate directory": (H.duplicate_dir, "duplicate name 'd'"),
    "file and directory": (H.file_and_dir, "both a file and a directory"),
    "unsorted files": (H.unsorted_files, "unsorted entries"),
    "unsorted directories": (H.unsorted_dirs, "unsorted entries"),
    "name ..": (lambda r: H.bad_name(r, ".."), "invalid file name"),
    "name .": (lambda r: H.bad_name(r, "."), "invalid file name"),
    "name with slash": (lambda r: H.bad_name(r, "etc/passwd"), "invalid file name"),
    "empty name": (lambda r: H.bad_name(r, ""), "invalid file name"),
    "name with NUL": (lambda r: H.bad_name(r, "aXb"), "malformed GVariant"),
    "short checksum": (H.short_checksum, "checksum field is not 32 bytes"),
    "wrong content": (H.wrong_content, "Corrupted file object"),
    "wrong dirtree": (H.wrong_dirtree, "Corrupted dirtree object"),
    "trailing data": (H.trailing_data, "data follows the compressed content"),
    "timestamp past 9999": (H.far_future, "Invalid timestamp: 99999999999999"),
    "garbage summary": (H.garbage_summary, "malformed GVariant"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_objects_refused(www: tuple[Path, str], tmp_path: Path, case: str) -> None:
    builder, message = MALFORMED[case]
    mirrored = mirror(www, tmp_path)
    before = snapshot(mirrored.host)
    builder(mirrored.server)
    assert message in one_line_error(mirrored.pull())
    mirrored.assert_untouched(before)


def test_oversized_metadata_refused_before_download(www: tuple[Path, str], tmp_path: Path) -> None:
    mirrored = mirror(www, tmp_path)
    before = snapshot(mirrored.host)
    H.oversized_dirtree(mirrored.server)
    error = one_line_error(mirrored.pull())
    assert "exceeded maximum size of 10485760 bytes" in error and ".dirtree" in error
    mirrored.assert_untouched(before)
    with H.serve_without_length(mirrored.server.path) as url:  # no Content-Length: the streaming cap stops it
        strata("repo", "remote", "delete", "--repo", str(mirrored.client), "origin")
        strata("repo", "remote", "add", "--repo", str(mirrored.client), "--no-gpg-verify", "origin", url)
        assert "exceeded maximum size" in one_line_error(mirrored.pull())
    mirrored.assert_untouched(before)


def test_decompression_bomb_stops_at_declared_size(www: tuple[Path, str], tmp_path: Path) -> None:
    mirrored = mirror(www, tmp_path)
    before = snapshot(mirrored.host)
    H.filez_bomb(mirrored.server)
    measure = ("import resource, subprocess, sys, time; start = time.monotonic(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
               "time.monotonic() - start); print(p.stderr, end='')")
    proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "strata.cli.main", "repo", "pull",
                           "--repo", str(mirrored.client), "origin", H.REF], capture_output=True, text=True,
                          check=True)
    status, peak_kib, seconds = proc.stdout.splitlines()[0].split()
    error = proc.stdout.splitlines()[1]
    assert status == "1" and error.startswith("error: ") and "inflates beyond the header size 10" in error
    print(f"bomb: peak RSS {int(peak_kib) // 1024} MiB, {float(seconds):.1f} s")
    assert int(peak_kib) < 300 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"
    assert float(seconds) < 30
    mirrored.assert_untouched(before)


def test_symlinks_out_of_the_tree_are_stored_never_followed(www: tuple[Path, str], tmp_path: Path) -> None:
    mirrored = mirror(www, tmp_path)
    host_before = snapshot(mirrored.host)
    commit = H.escaping_symlinks(mirrored.server, mirrored.host)
    assert mirrored.pull().returncode == 0
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    strata("repo", "checkout", "--repo", str(mirrored.client), commit, str(dest))
    assert (dest / "abs").readlink() == mirrored.host and (dest / "victim").is_symlink()
    # a second checkout over it with --union replaces the links; it never writes through them
    strata("repo", "checkout", "--repo", str(mirrored.client), "--union", commit, str(dest))
    assert snapshot(mirrored.host) == host_before
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["dest"]
    assert "no errors found" in strata("repo", "fsck", "--repo", str(mirrored.client)).stdout


@pytest.mark.parametrize("signature", ["absent", "other key"])
def test_unsigned_or_wrongly_signed_commit_refused(www: tuple[Path, str], tmp_path: Path, signature: str) -> None:
    _secret, public = generate_keypair()
    mirrored = mirror(www, tmp_path, f"--sign-verify=ed25519=inline:{public}")
    before = snapshot(mirrored.host)
    evil = H.duplicate_file(mirrored.server)
    if signature == "other key":
        other_secret, _other_public = generate_keypair()
        strata("repo", "sign", "--repo", str(mirrored.server.path), evil, other_secret)
    error = one_line_error(mirrored.pull())
    assert "ed25519 signature" in error and evil in error
    mirrored.assert_untouched(before)


def test_signature_of_another_type_counts_as_absent(www: tuple[Path, str], tmp_path: Path) -> None:
    _secret, public = generate_keypair()
    mirrored = mirror(www, tmp_path, f"--sign-verify=ed25519=inline:{public}")
    before = snapshot(mirrored.host)
    evil = H.retyped_signature(mirrored.server)
    assert f"commit {evil}: no ed25519 signature found" in one_line_error(mirrored.pull())
    mirrored.assert_untouched(before)


def test_gpg_verifying_remote_refuses_unsigned_commit(www: tuple[Path, str], tmp_path: Path) -> None:
    home = tmp_path / "gpg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                    "hostile-test <h@example.org>", "ed25519", "sign", "never"], check=True, capture_output=True)
    public = tmp_path / "public.asc"
    public.write_bytes(subprocess.run(["gpg", "--homedir", str(home), "--armor", "--export"], check=True,
                                      capture_output=True).stdout)
    try:
        mirrored = mirror(www, tmp_path, f"--gpg-import={public}")
        before = snapshot(mirrored.host)
        H.wrong_content(mirrored.server)
        error = one_line_error(mirrored.pull())
        assert "signature" in error.lower()
        mirrored.assert_untouched(before)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, capture_output=True)
