"""Distribution over HTTP: strata and the real ostree pull from each other through nginx; every byte is
verified; a bad server or a compromised mirror moves no ref."""

from __future__ import annotations

import http.server
import json
import random
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from strata.image.commit import CommitRequest, commit_directory
from strata.image.repo import Repo, RepoMode
from strata.image.sign import generate_keypair
from tests.conftest import run_ostree, untar
from tests.image.helpers import describe_tree, strata

REF = "strata/test/x86_64"


def make_tree(root: Path, seed: int, files: int = 60) -> Path:
    rng = random.Random(seed)
    for index in range(files):
        path = root / f"d{index % 5}" / f"f{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, 20000)))
    (root / "link").symlink_to("d0/f0")
    return root


@pytest.fixture
def served(tmp_path: Path, nginx: Callable[[Path], str]) -> tuple[Repo, str, str]:
    """A strata-written archive repo with a summary, served by nginx: (repo, url, commit)."""
    repo = Repo.init(tmp_path / "www" / "repo", RepoMode.ARCHIVE)
    commit = commit_directory(repo, make_tree(tmp_path / "tree", 1), REF, CommitRequest(subject="one", timestamp=1,
                                                                                       bind_refs=[REF]))
    strata("repo", "summary", "-u", "--repo", str(repo.path))
    return repo, nginx(tmp_path / "www") + "/repo", commit


def strata_client(tmp_path: Path, url: str, *extra: str, mode: str = "bare-user") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    client = tmp_path / "client"
    strata("repo", "init", "--repo", str(client), "--mode", mode)
    strata("repo", "remote", "add", "--repo", str(client), *extra, "origin", url)
    return client


def test_real_ostree_pulls_strata_repo(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    _repo, url, commit = served
    client = tmp_path / "ostree-client"
    run_ostree(f"--repo={client}", "init", "--mode=archive")
    run_ostree(f"--repo={client}", "remote", "add", "--no-gpg-verify", "origin", url)
    assert REF in run_ostree(f"--repo={client}", "remote", "refs", "origin").stdout
    run_ostree(f"--repo={client}", "pull", "--mirror", "origin", REF)
    assert run_ostree(f"--repo={client}", "rev-parse", REF).stdout.strip() == commit
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout


def test_strata_pulls_ostree_repo(tmp_path: Path, vectors: Path, nginx: Callable[[Path], str]) -> None:
    www = untar(vectors / "a/archive.tar", tmp_path / "www")
    url = nginx(www) + "/archive"
    client = strata_client(tmp_path, url)
    out = strata("repo", "pull", "--repo", str(client), "origin", REF).stdout
    assert "objects fetched" in out
    expected = "187461e9656367929d0e98d6c9f5c6b55b7bf9bdcb47344b2cfc03ebae717bd9"
    assert Repo.open(client).read_ref(REF, remote="origin") == expected
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    assert run_ostree(f"--repo={client}", "fsck", check=False).returncode == 0
    strata("repo", "checkout", "--repo", str(client), f"origin:{REF}", str(tmp_path / "co"))
    run_ostree(f"--repo={www / 'archive'}", "checkout", REF, str(tmp_path / "co-ostree"))
    assert describe_tree(tmp_path / "co") == describe_tree(tmp_path / "co-ostree")


def test_pull_fetches_only_missing_objects_and_depth(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    repo, url, first = served
    client = strata_client(tmp_path, url)
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    tree = tmp_path / "tree"
    (tree / "d0" / "f0").write_bytes(b"changed")
    second = commit_directory(repo, tree, REF, CommitRequest(subject="two", timestamp=2, parent=first,
                                                             bind_refs=[REF]))
    strata("repo", "summary", "-u", "--repo", str(repo.path))
    out = strata("repo", "pull", "--repo", str(client), "origin", REF).stdout
    assert out.startswith("4 objects fetched")  # commit, root and d0 dirtrees, one file
    assert Repo.open(client).read_ref(REF, remote="origin") == second


def test_ed25519_signatures_both_ways(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    repo, url, commit = served
    secret, public = generate_keypair()
    key_file = tmp_path / "secret.key"
    key_file.write_text(secret)
    strata("repo", "sign", "--repo", str(repo.path), REF, secret)
    strata("repo", "summary", "-u", "--repo", str(repo.path), "--sign", str(key_file))
    client = strata_client(tmp_path, url, f"--sign-verify=ed25519=inline:{public}")
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    assert Repo.open(client).read_ref(REF, remote="origin") == commit
    assert strata("repo", "sign", "--repo", str(client), "--verify", REF, public).returncode == 0
    # Debian's ostree 2022.7 is built without libsodium: it cannot check ed25519 in either direction.
    probe = run_ostree(f"--repo={repo.path}", "sign", "--verify", "--sign-type=ed25519", commit, public, check=False)
    assert probe.returncode != 0 and "not implemented" in probe.stderr


def test_unsigned_or_wrongly_signed_commit_refused(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    repo, url, _commit = served
    _secret, public = generate_keypair()
    client = strata_client(tmp_path, url, f"--sign-verify=ed25519=inline:{public}")
    proc = strata("repo", "pull", "--repo", str(client), "origin", REF, check=False)
    assert proc.returncode == 1 and "signature" in proc.stderr
    assert Repo.open(client).list_refs() == {}
    wrong_secret, _wrong_public = generate_keypair()
    strata("repo", "sign", "--repo", str(repo.path), REF, wrong_secret)
    proc = strata("repo", "pull", "--repo", str(client), "origin", REF, check=False)
    assert proc.returncode == 1 and "none of 1 ed25519 signatures is valid" in proc.stderr
    assert Repo.open(client).list_refs() == {}


class _Faulty(http.server.SimpleHTTPRequestHandler):
    mode = "ok"
    failed_once: set[str] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        if self.path.endswith(".filez") and cls.mode != "ok":
            if cls.mode == "flaky":
                if self.path not in cls.failed_once:
                    cls.failed_once.add(self.path)
                    self.send_error(500)
                    return
                super().do_GET()
                return
            if cls.mode == "flip":
                flipped = bytearray(Path(self.translate_path(self.path)).read_bytes())
                flipped[len(flipped) // 2] ^= 0x01
                self._send(bytes(flipped))
                return
            if cls.mode == "truncate":
                body = Path(self.translate_path(self.path)).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + 10))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            if cls.mode == "missing":
                self.send_error(404)
                return
            if cls.mode == "stall":
                time.sleep(3)
                return
        super().do_GET()

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def faulty_server(tmp_path: Path, served: tuple[Repo, str, str]) -> Iterator[tuple[str, type[_Faulty]]]:
    repo, _url, _commit = served
    directory = str(repo.path.parent)

    class Handler(_Faulty):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=directory, **kwargs)  # type: ignore[arg-type]

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo", Handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("mode", "message"), [
    ("flip", "Corrupted file object"), ("truncate", "Download incomplete"), ("missing", "HTTP 404"),
    ("stall", "no answer within 1 s")])
def test_bad_server_moves_no_ref_and_good_pull_resumes(faulty_server: tuple[str, type[_Faulty]], tmp_path: Path,
                                                        mode: str, message: str) -> None:
    url, handler = faulty_server
    handler.mode = mode
    client = strata_client(tmp_path, url, "--set=timeout=1")
    proc = strata("repo", "pull", "--repo", str(client), "origin", REF, check=False)
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert Repo.open(client).list_refs() == {}
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    handler.mode = "ok"
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    assert Repo.open(client).read_ref(REF, remote="origin") is not None


def test_transient_server_errors_are_retried(faulty_server: tuple[str, type[_Faulty]], tmp_path: Path) -> None:
    url, handler = faulty_server
    handler.mode = "flaky"
    client = strata_client(tmp_path, url)
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout


def test_compromised_mirror_refused(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    repo, url, _commit = served
    secret, public = generate_keypair()
    strata("repo", "sign", "--repo", str(repo.path), REF, secret)
    client = strata_client(tmp_path, url, f"--sign-verify=ed25519=inline:{public}")
    strata("repo", "pull", "--repo", str(client), "origin", REF)
    good = Repo.open(client).read_ref(REF, remote="origin")
    evil = commit_directory(repo, make_tree(tmp_path / "evil", 9), REF, CommitRequest(subject="evil", timestamp=3,
                                                                                      bind_refs=[REF]))
    strata("repo", "summary", "-u", "--repo", str(repo.path))
    proc = strata("repo", "pull", "--repo", str(client), "origin", REF, check=False)
    assert proc.returncode == 1 and "signature" in proc.stderr
    assert Repo.open(client).read_ref(REF, remote="origin") == good != evil


def _gpg_key(home: Path, name: str) -> tuple[str, Path]:
    """A fresh GPG key in its own homedir: (key id, exported public key file)."""
    import subprocess
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                    f"{name} <{name}@example.invalid>", "ed25519", "sign", "never"], check=True, capture_output=True)
    listing = subprocess.run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys"], capture_output=True,
                             text=True, check=True).stdout
    key_id = next(line.split(":")[4] for line in listing.splitlines() if line.startswith("pub:"))
    public = home.parent / f"{name}.asc"
    exported = subprocess.run(["gpg", "--homedir", str(home), "--armor", "--export", key_id], capture_output=True,
                              check=True).stdout
    public.write_bytes(exported)
    return key_id, public


def test_gpg_signed_ostree_repo(tmp_path: Path, nginx: Callable[[Path], str]) -> None:
    www = tmp_path / "www"
    repo = www / "repo"
    repo.mkdir(parents=True)
    run_ostree(f"--repo={repo}", "init", "--mode=archive")
    key_id, public = _gpg_key(tmp_path / "gpg", "signer")
    _other_id, other_public = _gpg_key(tmp_path / "gpg-other", "other")
    tree = make_tree(tmp_path / "tree", 3, files=10)
    run_ostree(f"--repo={repo}", "commit", "-b", REF, f"--gpg-sign={key_id}", f"--gpg-homedir={tmp_path / 'gpg'}",
               str(tree))
    url = nginx(www) + "/repo"
    good = strata_client(tmp_path / "good", url, f"--gpg-import={public}")
    strata("repo", "pull", "--repo", str(good), "origin", REF)
    assert Repo.open(good).read_ref(REF, remote="origin") is not None
    wrong = strata_client(tmp_path / "wrong", url, f"--gpg-import={other_public}")
    proc = strata("repo", "pull", "--repo", str(wrong), "origin", REF, check=False)
    assert proc.returncode == 1 and "none of 1 GPG signatures is valid" in proc.stderr
    assert Repo.open(wrong).list_refs() == {}
    run_ostree(f"--repo={repo}", "commit", "-b", REF, str(tree))  # an unsigned commit on the same ref
    proc = strata("repo", "pull", "--repo", str(good), "origin", REF, check=False)
    assert proc.returncode == 1 and "no GPG signature found" in proc.stderr


def test_strata_gpg_signature_verified_by_ostree(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    repo, url, commit = served
    key_id, public = _gpg_key(tmp_path / "gpg", "strata")
    strata("repo", "gpg-sign", "--repo", str(repo.path), "--gpg-homedir", str(tmp_path / "gpg"), REF, key_id)
    client = tmp_path / "ostree-client"
    run_ostree(f"--repo={client}", "init", "--mode=archive")
    run_ostree(f"--repo={client}", "remote", "add", f"--gpg-import={public}", "origin", url)
    pulled = run_ostree(f"--repo={client}", "pull", "origin", REF, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert run_ostree(f"--repo={client}", "rev-parse", f"origin:{REF}").stdout.strip() == commit
    _other, other_public = _gpg_key(tmp_path / "gpg2", "other")
    wrong = tmp_path / "ostree-wrong"
    run_ostree(f"--repo={wrong}", "init", "--mode=archive")
    run_ostree(f"--repo={wrong}", "remote", "add", f"--gpg-import={other_public}", "origin", url)
    assert run_ostree(f"--repo={wrong}", "pull", "origin", REF, check=False).returncode != 0
    listed = strata("repo", "remote", "refs", "--repo", str(strata_client(tmp_path / "s", url)), "origin").stdout
    assert listed.split() == [f"origin:{REF}"]


def _peak_rss_mib(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run argv in a child of a fresh interpreter; (its result, the child's peak RSS in MiB)."""
    measure = ("import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, "
               "text=True); print(json.dumps([p.returncode, p.stdout, p.stderr, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", measure, *argv], capture_output=True, text=True, check=True)
    status, stdout, stderr, peak_kib = json.loads(out.stdout)
    return subprocess.CompletedProcess(argv, status, stdout, stderr), peak_kib // 1024


@pytest.mark.parametrize("mode", ["archive", "bare-user"])
def test_large_object_pulled_in_bounded_memory(tmp_path: Path, nginx: Callable[[Path], str], mode: str) -> None:
    """A 96 MiB incompressible file: its body spools to disk and is inflated in chunks, not held whole."""
    repo = Repo.init(tmp_path / "www" / "repo", RepoMode.ARCHIVE)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big").write_bytes(random.Random(5).randbytes(96 << 20))
    commit = commit_directory(repo, tree, REF, CommitRequest(subject="big", timestamp=1))
    client = strata_client(tmp_path / "c", nginx(tmp_path / "www") + "/repo", mode=mode)
    proc, peak = _peak_rss_mib([sys.executable, "-m", "strata.cli.main", "repo", "pull", "--repo", str(client),
                                "origin", REF])
    assert proc.returncode == 0, proc.stderr
    assert peak < 96, f"peak RSS {peak} MiB"
    assert Repo.open(client).read_ref(REF, remote="origin") == commit
    assert "no errors found" in strata("repo", "fsck", "--repo", str(client)).stdout
    assert not list((client / "tmp").iterdir())


def ostree_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strata.cli.ostree", *args], capture_output=True, text=True,
                          check=check)


def test_objects_from_contenturl_and_mirrorlist(served: tuple[Repo, str, str], tmp_path: Path,
                                                nginx: Callable[[Path], str]) -> None:
    """Objects come from contenturl (a mirror list here); summary and commitmeta from url, as in ostree."""
    repo, url, commit = served
    content_www = tmp_path / "content-www"
    content_www.mkdir()
    subprocess.run(["cp", "-a", str(repo.path), str(content_www / "repo")], check=True)
    for path in repo.path.glob("objects/*/*"):
        if not path.name.endswith(".commitmeta"):
            path.unlink()  # the main server has no objects left
    content_url = nginx(content_www) + "/repo"
    (content_www / "mirrors").write_text(f"# comment\nhttp://127.0.0.1:1/nothing\n{content_url}\n")
    client = tmp_path / "client"
    ostree_cli(f"--repo={client}", "init", "--mode=archive")
    ostree_cli(f"--repo={client}", "remote", "add", "--no-gpg-verify", "origin", url,
               f"--contenturl=mirrorlist={content_url.rsplit('/', 1)[0]}/mirrors")
    out = ostree_cli(f"--repo={client}", "pull", "origin", REF).stdout
    assert out.startswith(f"{len(list(content_www.glob('repo/objects/*/*.dir*'))) + 2} metadata, ")
    assert Repo.open(client).read_ref(REF, remote="origin") == commit
    assert "no errors found" in run_ostree(f"--repo={client}", "fsck").stdout


def test_localcache_counts_and_unconfigured_remote(served: tuple[Repo, str, str], tmp_path: Path) -> None:
    _repo, url, commit = served
    cache, client = tmp_path / "cache", tmp_path / "client"
    for path in (cache, client):
        ostree_cli(f"--repo={path}", "init", "--mode=archive")
        ostree_cli(f"--repo={path}", "remote", "add", "--no-gpg-verify", "origin", url)
    ostree_cli(f"--repo={cache}", "pull", "origin", REF)
    out = ostree_cli(f"--repo={client}", "pull", "-L", str(cache), "origin", REF).stdout
    total = len([p for p in cache.glob("objects/*/*") if not p.name.endswith(".commit")])
    files = len(list(cache.glob("objects/*/*.filez")))
    # the commit's detached metadata is asked for (and counted) once; everything else is local
    assert out.startswith(f"1 metadata, 0 content objects fetched ({total - files + 1} meta, {files} content local)")
    assert Repo.open(client).read_ref(REF, remote="origin") == commit
    ostree_cli(f"--repo={client}", "config", "set", 'remote "origin".unconfigured-state', "Use the vendor tool")
    proc = ostree_cli(f"--repo={client}", "pull", "origin", REF, check=False)
    assert proc.returncode == 1 and proc.stderr == "error: remote unconfigured-state: Use the vendor tool\n"
